"""API keys and roles, through HTTP: 401 without or with a bad key, 403 for a role that may not, pos keys bound
to a store, the key lifecycle (create, list, revoke), the bootstrap key, hashed storage and the CLI."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from service import cli
from service.auth.models import ApiKey
from tests.conftest import ADMIN_KEY
from tests.factories import assert_problem, create_key, create_store, enroll

# --- 401 ---------------------------------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/v1/members?email=a@example.com"),
    ("POST", "/v1/members"),
    ("GET", "/v1/members/mem_x"),
    ("PATCH", "/v1/members/mem_x"),
    ("DELETE", "/v1/members/mem_x"),
    ("GET", "/v1/program"),
    ("PUT", "/v1/program"),
    ("GET", "/v1/stores"),
    ("POST", "/v1/stores"),
    ("GET", "/v1/api-keys"),
    ("POST", "/v1/api-keys"),
    ("DELETE", "/v1/api-keys/key_x"),
]


@pytest.mark.parametrize("key", [None, "lk_not_a_real_key_at_all_0000000000000"], ids=["no-key", "bad-key"])
async def test_every_endpoint_needs_a_valid_key(make_client, key):
    c = make_client(key)
    for method, path in PROTECTED:
        body = {"name": "Jane"} if method in ("POST", "PATCH", "PUT") else None
        r = await c.request(method, path, json=body)
        assert_problem(r, 401, "unauthorized")


MALFORMED_HEADERS = [
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Token " + ADMIN_KEY,
    ADMIN_KEY,
    "Bearer " + "x" * 5000,
    "Bearer " + ADMIN_KEY + "x",
    "Bearer " + ADMIN_KEY[:-1],
    "Bearer " + ADMIN_KEY.upper(),
]


async def test_malformed_authorization_header_is_401(make_client):
    c = make_client(None)
    for header in MALFORMED_HEADERS:
        r = await c.get("/v1/program", headers={"Authorization": header})
        assert r.status_code == 401, (header[:40], r.text)
        assert_problem(r, 401, "unauthorized")


async def test_bearer_scheme_is_case_insensitive(make_client):
    c = make_client(None)
    r = await c.get("/v1/program", headers={"Authorization": f"bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text


async def test_health_and_docs_need_no_key(make_client):
    anonymous = make_client(None)
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        r = await anonymous.get(path)
        assert r.status_code == 200, (path, r.text)


async def test_no_key_wins_over_a_bad_body(make_client):
    anonymous = make_client(None)
    for body in (b"{not json", b"\xff", b"[" * 10_000):
        r = await anonymous.post("/v1/members", content=body, headers={"Content-Type": "application/json"})
        assert_problem(r, 401, "unauthorized")
        r = await anonymous.put("/v1/program", content=body, headers={"Content-Type": "application/json"})
        assert_problem(r, 401, "unauthorized")
    r = await anonymous.post("/v1/members", json={"name": 5, "unknown": True})
    assert_problem(r, 401, "unauthorized")
    r = await anonymous.post("/v1/members", json={"name": "Jane"}, headers={"Idempotency-Key": "x" * 300})
    assert_problem(r, 401, "unauthorized")


# --- 403 ---------------------------------------------------------------------------------------------------------

@pytest.fixture
async def keys(client):
    store = await create_store(client)
    return {
        "store": store["id"],
        "pos": await create_key(client, "pos", store["id"]),
        "app": await create_key(client, "app"),
        "admin": await create_key(client, "admin"),
    }


@pytest.mark.parametrize("role", ["pos", "app"])
async def test_only_admin_manages_api_keys(make_client, keys, role):
    c = make_client(keys[role])
    assert_problem(await c.post("/v1/api-keys", json={"role": "app"}), 403, "forbidden")
    assert_problem(await c.get("/v1/api-keys"), 403, "forbidden")
    assert_problem(await c.delete("/v1/api-keys/key_whatever"), 403, "forbidden")


@pytest.mark.parametrize("role", ["pos", "app"])
async def test_only_admin_changes_program_and_stores(make_client, client, keys, role):
    program = (await client.get("/v1/program")).json()
    c = make_client(keys[role])
    assert_problem(await c.put("/v1/program", json=program), 403, "forbidden")
    assert_problem(await c.post("/v1/stores", json={"id": "s-new", "name": "New"}), 403, "forbidden")
    assert (await client.get("/v1/program")).json()["version"] == program["version"]
    ids = [s["id"] for s in (await client.get("/v1/stores")).json()["data"]]
    assert "s-new" not in ids


async def test_pos_may_not_erase_a_member(make_client, client, keys):
    member = await enroll(client)
    pos = make_client(keys["pos"])
    assert_problem(await pos.delete(f"/v1/members/{member['id']}"), 403, "forbidden")
    r = await client.get(f"/v1/members/{member['id']}")
    assert r.json()["status"] == "active" and r.json()["name"] == member["name"]


async def test_app_may_erase_a_member(make_client, client, keys):
    member = await enroll(client)
    r = await make_client(keys["app"]).delete(f"/v1/members/{member['id']}")
    assert r.status_code == 204, r.text


async def test_roles_read_members_program_and_stores(make_client, client, keys):
    member = await enroll(client)
    for role in ("pos", "app", "admin"):
        c = make_client(keys[role])
        assert (await c.get(f"/v1/members/{member['id']}")).status_code == 200, role
        assert (await c.get("/v1/program")).status_code == 200, role
        assert (await c.get("/v1/stores")).status_code == 200, role


async def test_forbidden_wins_over_a_bad_body(make_client, keys):
    c = make_client(keys["pos"])
    assert_problem(await c.post("/v1/api-keys", json={"role": "nope", "x": 1}), 403, "forbidden")


# --- creating keys ------------------------------------------------------------------------------------------------

async def test_create_keys_of_each_role(client, make_client):
    store = await create_store(client)
    for role, store_id in (("admin", None), ("app", None), ("pos", store["id"])):
        body = {"role": role, "name": f"my {role}"} | ({"store_id": store_id} if store_id else {})
        r = await client.post("/v1/api-keys", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["id"].startswith("key_")
        assert created["key"].startswith("lk_") and len(created["key"]) > 40
        assert (created["role"], created["store_id"], created["name"]) == (role, store_id, f"my {role}")
        r = await make_client(created["key"]).get("/v1/program")
        assert r.status_code == 200, r.text


async def test_every_created_key_is_different(client):
    keys = {await create_key(client, "app") for _ in range(5)}
    assert len(keys) == 5


async def test_pos_key_needs_a_store(client):
    assert_problem(await client.post("/v1/api-keys", json={"role": "pos"}), 422, "store_required")
    assert_problem(await client.post("/v1/api-keys", json={"role": "pos", "store_id": None}), 422,
                   "store_required")


async def test_pos_key_for_an_unknown_store_is_404(client):
    assert_problem(await client.post("/v1/api-keys", json={"role": "pos", "store_id": "no-such-store"}), 404,
                   "store_not_found")


@pytest.mark.parametrize("role", ["admin", "app"])
async def test_admin_and_app_keys_take_no_store(client, role):
    store = await create_store(client)
    r = await client.post("/v1/api-keys", json={"role": role, "store_id": store["id"]})
    assert_problem(r, 422, "store_not_allowed")
    assert len(await all_keys(client)) == 1


KEY_BODIES = [
    {},
    {"role": "root"},
    {"role": None},
    {"role": "pos", "store_id": 7},
    {"role": "app", "name": "x" * 101},
    {"role": "app", "name": ""},
    {"role": "app", "nmae": "typo"},
    {"role": "pos", "store_id": "bad store id!"},
    {"role": "pos", "store_id": "s" * 65},
    [],
    "app",
]


async def test_create_key_validation(client):
    for body in KEY_BODIES:
        r = await client.post("/v1/api-keys", json=body)
        assert r.status_code == 422, (body, r.text)
        assert_problem(r, 422, "validation_error")
        assert r.json()["errors"]
    assert len(await all_keys(client)) == 1


async def test_pos_key_is_bound_to_its_store(client):
    store = await create_store(client)
    created = (await client.post("/v1/api-keys", json={"role": "pos", "store_id": store["id"]})).json()
    assert created["store_id"] == store["id"]
    listed = await all_keys(client)
    assert listed[created["id"]]["store_id"] == store["id"]
    assert listed[created["id"]]["role"] == "pos"


# --- listing and revoking -----------------------------------------------------------------------------------------

async def all_keys(client, limit: int = 500) -> dict[str, dict]:
    found: dict[str, dict] = {}
    after = None
    while True:
        params = {"limit": limit} | ({"after": after} if after else {})
        r = await client.get("/v1/api-keys", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        for k in page["data"]:
            assert k["id"] not in found, "a key was listed twice"
            found[k["id"]] = k
        after = page["next_cursor"]
        if after is None:
            return found


async def test_list_keys_pages_through_every_key(client):
    created = {(await client.post("/v1/api-keys", json={"role": "app"})).json()["id"] for _ in range(5)}
    r = await client.get("/v1/api-keys", params={"limit": 2})
    assert r.status_code == 200
    first = r.json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    listed = await all_keys(client, limit=2)
    assert created <= set(listed)
    assert len(listed) == 6  # the five and the bootstrap key
    ids = list(listed)
    assert ids == sorted(ids)
    for k in listed.values():
        assert "key" not in k and "key_hash" not in k
        assert set(k) >= {"id", "prefix", "role", "store_id", "name", "created_at", "revoked_at"}


async def test_list_keys_last_page_has_no_cursor(client):
    r = await client.get("/v1/api-keys", params={"limit": 500})
    assert r.status_code == 200 and r.json()["next_cursor"] is None


async def test_list_keys_bad_paging_is_422(client):
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "ten"}, {"limit": -1}, {"after": "x" * 201}):
        r = await client.get("/v1/api-keys", params=params)
        assert r.status_code == 422, params
        assert_problem(r, 422, "validation_error")


async def test_revoked_key_is_401(client, make_client):
    created = (await client.post("/v1/api-keys", json={"role": "app"})).json()
    c = make_client(created["key"])
    assert (await c.get("/v1/program")).status_code == 200
    r = await client.delete(f"/v1/api-keys/{created['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_problem(await c.get("/v1/program"), 401, "unauthorized")
    listed = await all_keys(client)
    assert listed[created["id"]]["revoked_at"] is not None
    assert (await client.delete(f"/v1/api-keys/{created['id']}")).status_code == 204


async def test_revoke_unknown_key_is_404(client):
    assert_problem(await client.delete("/v1/api-keys/key_doesnotexist"), 404, "not_found")


async def test_admin_keys_may_revoke_each_other(client, make_client):
    other = (await client.post("/v1/api-keys", json={"role": "admin"})).json()
    second = make_client(other["key"])
    third = (await second.post("/v1/api-keys", json={"role": "admin"})).json()
    assert (await second.delete(f"/v1/api-keys/{third['id']}")).status_code == 204
    assert_problem(await make_client(third["key"]).get("/v1/program"), 401, "unauthorized")


# --- bootstrap, storage, CLI --------------------------------------------------------------------------------------

async def test_bootstrap_admin_key_works_and_is_listed(client):
    r = await client.post("/v1/api-keys", json={"role": "app"})
    assert r.status_code == 201
    listed = await all_keys(client)
    bootstrap = [k for k in listed.values() if k["name"] == "bootstrap"]
    assert len(bootstrap) == 1 and bootstrap[0]["role"] == "admin"


async def test_bootstrap_is_idempotent_across_starts(app, client):
    from service.app import prepare_database

    await prepare_database(app.state.db, app.state.settings, app.state.clock)
    await prepare_database(app.state.db, app.state.settings, app.state.clock)
    listed = await all_keys(client)
    assert [k["name"] for k in listed.values()].count("bootstrap") == 1


async def test_bootstrap_concurrent_starts(app, client):
    from service.app import prepare_database

    await asyncio.gather(*(prepare_database(app.state.db, app.state.settings, app.state.clock)
                           for _ in range(4)))
    listed = await all_keys(client)
    assert [k["name"] for k in listed.values()].count("bootstrap") == 1
    assert (await client.get("/v1/program")).json()["version"] == 1


async def test_a_changed_bootstrap_key_retires_the_one_before(app, make_client):
    """A rotated LOYALTY_BOOTSTRAP_ADMIN_KEY (a leak, or the Makefile's development key replaced) left the old
    key an active admin key until someone found it."""
    from service.app import prepare_database
    from service.auth import service as auth_service

    secret = "Adm1nKey-2026-q3"  # as short as the settings take
    other = app.state.settings.model_copy(update={"bootstrap_admin_key": secret})
    await prepare_database(app.state.db, other, app.state.clock)  # a command's: retires nothing
    assert (await make_client(ADMIN_KEY).get("/v1/api-keys")).status_code == 200
    await prepare_database(app.state.db, other, app.state.clock, serving=True)  # the next start of the servers
    auth_service.forget_cached_keys()
    new = make_client(secret)
    assert_problem(await make_client(ADMIN_KEY).get("/v1/api-keys"), 401, "unauthorized")
    listed = await all_keys(new)
    bootstrap = {k["prefix"]: k for k in listed.values() if k["name"] == "bootstrap"}
    assert bootstrap[ADMIN_KEY[:4]]["revoked_at"] is not None and bootstrap[secret[:4]]["revoked_at"] is None
    # a listing shows 4 of a chosen key's characters, and its id nothing of its hash
    assert all(len(k["prefix"]) == 4 for k in bootstrap.values())
    from service.auth import rules

    assert rules.hash_key(secret)[:16] not in bootstrap[secret[:4]]["id"]
    audit = (await new.get("/v1/audit-log", params={"action": "api_key.revoked"})).json()["data"]
    assert [(e["actor"], e["target"]) for e in audit] == [("bootstrap", bootstrap[ADMIN_KEY[:4]]["id"])]


async def test_a_revoked_key_is_refused_at_once_in_the_revoking_process(app, client, make_client, monkeypatch):
    """A request authenticating while the revocation was being written read the key as active and cached it: the
    key went on working for 5 s after the 204."""
    from service.auth import service as auth_service

    created = (await client.post("/v1/api-keys", json={"role": "app"})).json()
    audit = auth_service.audit
    seen = []

    async def a_request_comes_in_meanwhile(*args, **kwargs):
        await audit(*args, **kwargs)
        seen.append(await auth_service.authenticate(app.state.db, created["key"]))

    monkeypatch.setattr(auth_service, "audit", a_request_comes_in_meanwhile)
    assert (await client.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
    assert seen == [None]
    assert_problem(await make_client(created["key"]).get("/v1/program"), 401, "unauthorized")


async def test_keys_are_stored_hashed(app, client):
    secrets = [ADMIN_KEY, (await client.post("/v1/api-keys", json={"role": "app"})).json()["key"]]
    async with app.state.db.session(write=False) as session:
        rows = (await session.execute(select(ApiKey))).scalars().all()
        dump = (await session.execute(text("SELECT * FROM api_keys"))).all()
    assert len(rows) == 2
    everything = repr(dump)
    for secret in secrets:
        assert secret not in everything
        assert secret[10:] not in everything  # only a short display prefix is kept
    for row in rows:
        assert len(row.key_hash) == 64 and row.key_hash not in secrets


def _run_cli(argv: list[str]) -> int:
    return cli.main(argv)


async def test_cli_creates_a_working_pos_key(client, make_client, settings, monkeypatch, capsys):
    store = await create_store(client)
    monkeypatch.setenv("LOYALTY_DATABASE_URL", settings.database_url)
    capsys.readouterr()
    code = await asyncio.to_thread(_run_cli, ["keys", "create", "--role", "pos", "--store", store["id"],
                                              "--name", "till 1"])
    assert code == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("lk_")
    pos = make_client(secret)
    assert (await pos.get("/v1/program")).status_code == 200
    assert_problem(await pos.get("/v1/api-keys"), 403, "forbidden")
    listed = await all_keys(client)
    mine = [k for k in listed.values() if k["name"] == "till 1"]
    assert len(mine) == 1 and mine[0]["role"] == "pos" and mine[0]["store_id"] == store["id"]


async def test_cli_refuses_pos_key_without_known_store(client, settings, monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_DATABASE_URL", settings.database_url)
    assert await asyncio.to_thread(_run_cli, ["keys", "create", "--role", "pos"]) == 1
    assert await asyncio.to_thread(_run_cli, ["keys", "create", "--role", "pos", "--store", "nowhere"]) == 1
    assert "error" in capsys.readouterr().err
    assert len(await all_keys(client)) == 1
