"""The audit log through HTTP: every admin change, newest first, filtered and paged; no secret in it; admin only
(SQLite and PostgreSQL)."""

from __future__ import annotations

from tests import factories as f


async def audit_log(client, **params) -> dict:
    r = await client.get("/v1/audit-log", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_admin_changes_are_listed_newest_first_with_who_and_what(client, clock):
    admin = next(k["id"] for k in (await client.get("/v1/api-keys")).json()["data"] if k["role"] == "admin")
    store = (await f.create_store(client))["id"]
    program = await f.set_program(client, point_value=2)
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 25, reason="goodwill")
    till = await f.create_key(client, "pos", store)
    till_id = next(k["id"] for k in (await client.get("/v1/api-keys")).json()["data"] if k["role"] == "pos")
    assert (await client.delete(f"/v1/api-keys/{till_id}")).status_code == 204
    r = await client.post("/v1/webhooks", json={"url": "https://example.com/hook", "types": ["member.enrolled"]})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert (await client.delete(f"/v1/members/{member}")).status_code == 204

    entries = (await audit_log(client))["data"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("member.erased", member), ("webhook.created", hook["id"]), ("api_key.revoked", till_id),
        ("api_key.created", till_id), ("points.adjusted", member), ("member.enrolled", member),
        ("program.updated", str(program["version"])), ("store.created", store)]
    assert {e["actor"] for e in entries} == {admin}
    assert [int(e["id"]) for e in entries] == sorted((int(e["id"]) for e in entries), reverse=True)
    adjusted = next(e for e in entries if e["action"] == "points.adjusted")
    assert adjusted["data"]["amount"] == 25 and adjusted["data"]["reason"] == "goodwill"
    assert adjusted["at"] <= clock.now().isoformat().replace("+00:00", "Z")
    # What the log keeps never holds a secret: not the new key, not the webhook's signing secret.
    text = (await client.get("/v1/audit-log")).text
    assert till not in text and hook["secret"] not in text
    assert next(e for e in entries if e["action"] == "api_key.created")["data"] == {
        "role": "pos", "store_id": store, "name": "pos key"}


async def test_admin_money_and_profile_changes_are_logged_and_a_tills_top_up_is_not(client, make_client):
    admin = next(k["id"] for k in (await client.get("/v1/api-keys")).json()["data"] if k["role"] == "admin")
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client, phone=f.unique_phone()))["id"]
    till = make_client(await f.create_key(client, "pos", store))
    for caller, amount in ((till, 300), (client, 200)):
        r = await caller.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": amount, "payment_ref": "p"},
                              headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text
    r = await client.patch(f"/v1/members/{member}", json={"name": "Ada Lovelace", "phone": f.unique_phone()})
    assert r.status_code == 200, r.text
    assert (await till.patch(f"/v1/members/{member}", json={"name": "Ada L."})).status_code == 200
    r = await client.post(f"/v1/members/{member}/wallet/cash-out", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text

    entries = (await audit_log(client, target=member))["data"]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("wallet.cashed_out", admin), ("member.updated", admin), ("wallet.topped_up", admin),
        ("member.enrolled", admin)]
    cashed_out, updated, topped_up, enrolled = (e["data"] for e in entries)
    assert enrolled == {"fields": ["email", "name", "phone"]}  # an admin's enrolment (a till's is its ordinary work)
    enrolled_at_till = (await till.post("/v1/members", json={"name": "Till Member"})).json()["id"]
    assert (await audit_log(client, target=enrolled_at_till))["data"] == []
    assert cashed_out["cash_paid"] == 500 and cashed_out["bonus_forfeited"] == 0
    assert updated == {"fields": ["name", "phone"]}  # which fields, never their values
    assert topped_up["amount"] == 200 and topped_up["payment_ref"] == "p"
    assert "Ada" not in (await client.get("/v1/audit-log")).text


async def test_filters_and_pages(client):
    stores = [(await f.create_store(client))["id"] for _ in range(5)]
    await f.set_program(client, point_value=3)
    created = (await audit_log(client, action="store.created"))["data"]
    assert [e["target"] for e in created] == stores[::-1]
    assert [e["target"] for e in (await audit_log(client, target=stores[2]))["data"]] == [stores[2]]
    assert (await audit_log(client, action="store.created", target=stores[0], actor="key_nobody"))["data"] == []

    seen, after = [], None
    while True:
        page = await audit_log(client, action="store.created", limit=2, **({"after": after} if after else {}))
        seen += [e["target"] for e in page["data"]]
        assert len(page["data"]) <= 2
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == stores[::-1]


async def test_a_cursor_it_never_gave_is_refused_and_only_an_admin_reads_it(client, make_client):
    for after in ("abc", "-1", "1" * 20):
        f.assert_problem(await client.get("/v1/audit-log", params={"after": after}), 422, "validation_error")
    store = (await f.create_store(client))["id"]
    for role, store_id in (("pos", store), ("app", None)):
        key = await f.create_key(client, role, store_id)
        f.assert_problem(await make_client(key).get("/v1/audit-log"), 403, "forbidden")
    f.assert_problem(await make_client(None).get("/v1/audit-log"), 401, "unauthorized")
