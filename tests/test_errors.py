"""Every error is RFC 9457 problem+json, and no crafted input reaches a 500 or writes a row.

The sweep sends wrong types, nulls, huge strings, bad dates and emails, huge numbers, nested objects, arrays,
non-JSON bodies and control characters to the member, store and program endpoints. Cases are grouped (one test
per field or kind of input) so the sweep stays fast on both engines; a failing case is named in the message.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from service.members.models import Member
from service.observability import JsonFormatter
from service.program.models import Store
from tests import factories as f
from tests.conftest import ADMIN_KEY, IS_POSTGRES
from tests.factories import enroll

PROBLEM = "application/problem+json"
HUGE = "x" * 100_000
TOMORROW = (date.today() + timedelta(days=1)).isoformat()


def problem_of(r: httpx.Response) -> dict:
    """The response as a problem document, checked field by field."""
    assert r.headers.get("content-type", "").startswith(PROBLEM), (r.status_code, r.headers, r.text[:300])
    body = r.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("type"), str) and body["type"], body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert body.get("status") == r.status_code, body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("code"), str) and re.fullmatch(r"[a-z_]+", body["code"]), body
    if body["code"] == "validation_error":  # API.md: validation errors add `errors: [{loc, msg}]`, always
        assert body.get("errors"), body
        for err in body["errors"]:
            assert isinstance(err["loc"], list) and isinstance(err["msg"], str), err
    return body


def assert_client_error(r: httpx.Response, case: Any) -> dict:
    assert 400 <= r.status_code < 500, f"{case!r:.200}: {r.status_code} {r.text[:300]}"
    return problem_of(r)


@pytest.fixture
async def raw(app):
    """An admin client that reports a 500 as a response instead of raising the app's exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


async def count(app, model) -> int:
    async with app.state.db.session(write=False) as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def send_json(c: httpx.AsyncClient, method: str, url: str, body: Any) -> httpx.Response:
    if isinstance(body, Raw):
        return await c.request(method, url, content=body.content, headers=body.headers)
    return await c.request(method, url, content=json.dumps(body), headers={"Content-Type": "application/json"})


class Raw:
    """A body sent as these bytes with these headers (not JSON-encoded by the test)."""

    def __init__(self, content: bytes, content_type: str | None = "application/json") -> None:
        self.content = content
        self.headers = {"Content-Type": content_type} if content_type else {}

    def __repr__(self) -> str:
        return f"Raw({self.content[:60]!r}, {self.headers})"


# --- the shape of errors ------------------------------------------------------------------------------------------

async def test_unknown_route_is_404(client, make_client):
    for c in (client, make_client(None)):
        r = await c.get("/v1/nothing-here")
        assert r.status_code == 404 and problem_of(r)["code"] == "not_found"
    r = await client.post("/nope", json={})
    assert r.status_code == 404 and problem_of(r)["code"] == "not_found"


WRONG_METHODS = [
    ("PUT", "/v1/members"), ("DELETE", "/v1/members"), ("POST", "/v1/members/mem_x"), ("PUT", "/v1/members/mem_x"),
    ("POST", "/v1/program"), ("DELETE", "/v1/program"), ("PATCH", "/v1/program"), ("DELETE", "/v1/stores"),
    ("PUT", "/v1/api-keys"), ("GET", "/v1/api-keys/key_x"), ("POST", "/healthz"),
]


async def test_wrong_method_is_405(client):
    for method, path in WRONG_METHODS:
        r = await client.request(method, path)
        assert r.status_code == 405, (method, path, r.text)
        assert problem_of(r)["code"] == "method_not_allowed"
        assert r.headers.get("allow")


async def test_malformed_json_is_400(client, app):
    r = await client.post("/v1/members", content=b'{"name": "Jane"', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and problem_of(r)["code"] == "malformed_json"
    assert await count(app, Member) == 0


async def test_validation_error_lists_every_problem(client):
    r = await client.post("/v1/members", json={"name": "", "email": "nope", "birthday": "2020-13-45", "bogus": 1})
    assert r.status_code == 422
    body = problem_of(r)
    assert body["code"] == "validation_error"
    locs = [tuple(e["loc"]) for e in body["errors"]]
    for field in ("name", "email", "birthday", "bogus"):
        assert ("body", field) in locs, locs
    assert all(set(e) == {"loc", "msg"} for e in body["errors"])  # the input is not echoed back


async def test_validation_errors_do_not_echo_huge_input(client):
    r = await client.post("/v1/members", json={"name": HUGE})
    assert r.status_code == 422 and len(r.content) < 2_000


UNKNOWN_FIELDS = [{"name": "J", "foo": 1}, {"name": "J", "Name": "K"}, {"name": "J", "id": "mem_1"},
                  {"name": "J", "card_number": "79927398713"}, {"name": "J", "status": "erased"},
                  {"name": "J", "tier": "gold"}, {"name": "J", "referred_by": "mem_x"},
                  {"name": "J", "emial": "a@b.co"}]


async def test_unknown_fields_are_422(client, app):
    for body in UNKNOWN_FIELDS:
        r = await client.post("/v1/members", json=body)
        assert r.status_code == 422, body
        problem = problem_of(r)
        assert problem["code"] == "validation_error"
        unknown = (set(body) - {"name"}).pop()
        assert ["body", unknown] in [e["loc"] for e in problem["errors"]], problem
    assert await count(app, Member) == 0


async def test_service_errors_are_problems(client):
    for r in (await client.get("/v1/members/mem_missing"),
              await client.get("/v1/members", params={"card_number": "79927398714"}),
              await client.post("/v1/stores", json={"id": "dup", "name": "A"}),
              await client.post("/v1/stores", json={"id": "dup", "name": "A"})):
        if r.status_code != 201:
            assert_client_error(r, r.url)


async def test_errors_carry_the_request_id(client):
    r = await client.get("/v1/members/mem_missing", headers={"X-Request-ID": "req-123"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "req-123"


@pytest.fixture
async def failing_enrolment(app):
    """Every insert into ``members`` fails in the database, as any unexpected failure would (disk full, a lost
    connection, a constraint added by operations), until the test ends."""
    async with app.state.db.transaction() as session:
        if IS_POSTGRES:
            await session.execute(text(
                "CREATE OR REPLACE FUNCTION test_fail_insert() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$"))
            await session.execute(text("CREATE TRIGGER test_fail_insert BEFORE INSERT ON members "
                                       "FOR EACH ROW EXECUTE FUNCTION test_fail_insert()"))
        else:
            await session.execute(text("CREATE TRIGGER test_fail_insert BEFORE INSERT ON members "
                                       "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"))
    yield
    async with app.state.db.transaction() as session:
        await session.execute(text("DROP TRIGGER IF EXISTS test_fail_insert" + (" ON members" if IS_POSTGRES else "")))
        if IS_POSTGRES:
            await session.execute(text("DROP FUNCTION IF EXISTS test_fail_insert()"))


async def test_a_database_failure_logs_its_traceback_without_the_statements_values(app, caplog, failing_enrolment):
    """A 500 is logged with the traceback of what failed (the handler runs after the ``except``, where
    ``log.exception`` found no exception and wrote ``NoneType: None``), and the server logs the exception the app
    re-raises (Starlette's ServerErrorMiddleware, uvicorn's "Exception in ASGI application"). Neither may carry
    the statement's values (SQLAlchemy's "[parameters: ...]"): the new member's name, phone, email and birthday
    would rest in the logs, which no erasure reaches. The engine hides them (``hide_parameters``)."""
    personal = {"name": "Ada Lovelace", "phone": "+14155550199", "email": "ada.lovelace@example.com",
                "birthday": "1985-12-10"}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    raised = None
    caplog.set_level(logging.ERROR, logger="service.errors")
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        try:
            await c.post("/v1/members", json=personal)  # (its traceback ends in this line: no values in it)
        except Exception as exc:  # what reaches the server
            raised = exc
    assert raised is not None, "expected the 500's exception to reach the server"
    [record] = [r for r in caplog.records if r.name == "service.errors"]
    assert record.exc_info and record.exc_info[1] is raised, record.exc_info
    logged = JsonFormatter().format(record)
    assert "Traceback" in logged and ("disk I/O error" in logged or "could not extend file" in logged), logged
    for where in (logged, "".join(traceback.format_exception(raised))):
        for value in personal.values():
            assert value not in where, f"{value!r} is in a log: {where[-600:]}"
        assert "hidden due to hide_parameters" in where


# --- crafted bodies for POST /v1/members --------------------------------------------------------------------------

NON_JSON = [
    Raw(b""), Raw(b"", None), Raw(b"{"), Raw(b"}"), Raw(b"not json"), Raw(b"not json", None),
    Raw(b"name=Jane", "application/x-www-form-urlencoded"), Raw(b"<member><name>J</name></member>", "text/xml"),
    Raw(b"\xff\xfe\x00\x00"), Raw(b'{"name": "J\xffane"}'),
    Raw(b"[" * 50_000 + b"]" * 50_000), Raw(b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    Raw(b'{"name": NaN}'), Raw(b'{"name": Infinity}'), Raw(b'{"name": "J", "marketing_consent": 1e999}'),
    Raw(b'{"name": "J", "birthday": ' + b"9" * 5000 + b"}"), Raw(b'{"name": "\\ud800"}'),
    Raw(b'{"name": "J", "\\ud800": 1}'), Raw(b'{"name": "J", "\\u0000": 1}'), Raw(b'{"name": "J", "name": 5}'),
    Raw(b'\xef\xbb\xbf{"name": "J"'), Raw(b'{"name": "J"}garbage'), Raw(b"\x00" * 100),
    Raw(b'{"name": "' + b"x" * 2_000_000 + b'"}'),
    Raw(b"--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nJ\r\n--b--", "multipart/form-data; boundary=b"),
    Raw(b"null"), Raw(b"[]"), Raw(b'"Jane"'),
    Raw(b"123"), Raw(b"true"), Raw(b'[{"name": "Jane"}]'),
]

MEMBER_FIELDS: dict[str, list[Any]] = {
    "name": [None, 5, 0, True, 1.5, [], ["Jane"], {}, {"first": "J"}, "", "   ", HUGE, "x" * 101, "\x00",
             "Ja\x00ne", "a\nb", "tab\there", "\x1b[31mred", "\x7f", "\x01", "a\u2028b", "a\u2029b", "a\x85b",
             "a\x9bb", "Ada \u202eecalevoL"],
    "phone": [5, 14155552671, True, [], {}, ["+14155552671"], "", "x", HUGE, "+1" + "9" * 100, "\x00",
              "+1415555\x002671", "١٢٣٤٥٦٧٨٩٠", "+", "((((((((((()", "0000000000", "+0", "12",
              "+1 415 555 2671 ext 5", "+99999999999999", "+1415555267１"],
    "email": [5, True, [], {}, ["a@example.com"], "", "not-an-email", "a@b", "@example.com", "a@@example.com",
              "a" * 100_000 + "@example.com", "jane@example.com\x00", "ja\x00ne@example.com", "jane@exa mple.com",
              "jane@localhost", "jane@[127.0.0.1]", "jane@-example.com", "jane@example..com", "jane.@example.com",
              "jane@" + "d" * 64 + ".com", "jane@example.com\n", "\u202ejane@example.com"],
    "birthday": [5, 10**20, -(10**20), True, [], {}, "", "2020-13-45", "not a date", "1990-02-30", "1990-00-10",
                 "0000-00-00", "99999-01-01", "-0001-01-01", "2999-01-01", TOMORROW, "1899-12-31", "1990-1-1",
                 "01/02/1990", "1990-01-01T12:00:00", "1990-01-01\x00", HUGE, "١٩٩٠-٠١-٠١"],
    "locale": [5, True, [], {}, "", "e", "english-please", "en_US", "../../etc", "en\x00", HUGE, "zh-" + "x" * 9,
               "en-US-a-b-c-d"],
    "marketing_consent": ["maybe", 2, -1, 1.5, [], {}, "", "\x00", HUGE],
    "external_ref": [5, True, [], {}, "", "   ", "x" * 101, HUGE, "\x00", "a\tb", "a\nb"],
    "referral_code": [5, True, [], {}, "", "AB", "!!!!", "x" * 17, HUGE, "ABCD\x00", "NOSUCHCODE", "ab cd"],
}


@pytest.mark.parametrize("field", list(MEMBER_FIELDS))
async def test_enroll_sweep_by_field(raw, app, field):
    for value in MEMBER_FIELDS[field]:
        body = {"name": "Jane"} | {field: value}
        assert_client_error(await send_json(raw, "POST", "/v1/members", body), (field, value))
    assert await count(app, Member) == 0


async def test_enroll_sweep_non_json(raw, app):
    for body in NON_JSON:
        assert_client_error(await send_json(raw, "POST", "/v1/members", body), body)
    assert await count(app, Member) == 0


async def test_enroll_sweep_shapes(raw, app):
    shapes = [None, [], [{"name": "J"}], "Jane", 5, True, {}, {"member": {"name": "J"}}, {"name": "J", "x" * 10_000: 1},
              {"name": "J", "phone": {"number": "+14155552671"}}, {"name": "J", "email": {"$ne": ""}},
              {"name": "J", "birthday": {"year": 1990}}, {str(i): i for i in range(2000)}]
    for body in shapes:
        assert_client_error(await send_json(raw, "POST", "/v1/members", body), body)
    assert await count(app, Member) == 0


async def test_enroll_sweep_with_idempotency_key(raw, app):
    """The idempotent path renders the same errors (and remembers them without a 500)."""
    for i, body in enumerate([*NON_JSON[:12], {"name": HUGE}, {"name": "J", "birthday": "2020-13-45"}]):
        r = await raw.request("POST", "/v1/members", content=body.content if isinstance(body, Raw) else
                              json.dumps(body), headers={"Content-Type": "application/json",
                                                         "Idempotency-Key": f"sweep-{i}"})
        assert_client_error(r, body)
    assert await count(app, Member) == 0


# --- PATCH /v1/members/{id} ---------------------------------------------------------------------------------------

PATCH_FIELDS = {k: [v for v in vs if v is not None] for k, vs in MEMBER_FIELDS.items() if k != "referral_code"}


@pytest.mark.parametrize("field", list(PATCH_FIELDS))
async def test_patch_sweep_by_field(raw, client, field):
    m = await enroll(client, birthday="1990-01-01", locale="en", marketing_consent=True, external_ref="r-1")
    for value in PATCH_FIELDS[field]:
        if field == "referral_code":
            continue
        r = await send_json(raw, "PATCH", f"/v1/members/{m['id']}", {field: value})
        assert_client_error(r, (field, value))
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m


async def test_patch_sweep_non_json_and_shapes(raw, client):
    m = await enroll(client)
    for body in [*NON_JSON, None, [], "Jane", 5, {"name": None}, {"referral_code": "ABCDEFGH"},
                 {"card_number": "79927398713"}, {"status": "active"}, {"tier": "gold"}, {"enrolled_at": "now"}]:
        assert_client_error(await send_json(raw, "PATCH", f"/v1/members/{m['id']}", body), body)
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m


# --- GET /v1/members?..., GET/DELETE /v1/members/{id} -------------------------------------------------------------

LOOKUP_QUERIES = [
    "", "?", "?card_number=", "?phone=", "?email=", "?card_number=" + "1" * 10_000, "?email=" + "a" * 20_000,
    "?phone=" + "1" * 1000, "?card_number=%00", "?email=%00", "?email=a%00b@example.com", "?phone=%00",
    "?phone=+1415%00", "?email=%FF", "?email=%ED%A0%80", "?card_number=%ED%A0%80", "?phone=%ED%A0%80",
    "?card_number=79927398714", "?card_number=7992-7398-714", "?card_number=%C2%B2%C2%B2",
    "?card_number=%EF%BC%98%EF%BC%91", "?phone=not+a+phone", "?phone=%2B", "?email=a&email=b",
    "?card_number=1&phone=2", "?email[]=a@example.com", "?name=Jane", "?card_number=%0A%0D",
    "?email=%0Ajane@example.com", "?phone=%E2%80%AE14155552671", "?limit=-1&email=a@example.com",
    "?email=a@example.com&limit=999999999999999999999999",
]


async def test_lookup_sweep(raw, client):
    await enroll(client)
    for query in LOOKUP_QUERIES:
        r = await raw.get("/v1/members" + query)
        if r.status_code == 200:  # a well-formed look-up of something absent is an empty list, not an error
            assert r.json() == {"data": [], "next_cursor": None}, query
        else:
            assert_client_error(r, query)


MEMBER_IDS = ["%00", "mem_%00", "%FF", "%ED%A0%80", "x" * 65, "x" * 10_000, "..%2F..%2Fetc", "%20", "mem_%0A",
              "mem_abc%3Bdrop", "'%20OR%201=1", "%E2%80%AE", "mem_" + "%C3%A9" * 30, "null", "0", "-1"]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_member_id_sweep(raw, client, app, method):
    m = await enroll(client)
    for member_id in MEMBER_IDS:
        r = await raw.request(method, f"/v1/members/{member_id}", json={"locale": "en"} if method == "PATCH" else None)
        assert_client_error(r, member_id)
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m
    assert await count(app, Member) == 1


# --- POST /v1/stores ----------------------------------------------------------------------------------------------

STORE_FIELDS: dict[str, list[Any]] = {
    "id": [5, True, [], {}, "", "a b", "x" * 65, HUGE, "../x", "s\x00", "s\n", "é", "s/1", "s;drop", ".", "..", "..."],
    "name": [None, 5, True, [], {}, "", "x" * 101, HUGE, "\x00", "a\x00b", "a\nb", "\x1b"],
    "timezone": [None, 5, True, [], {}, "", "Mars/Olympus", "Europe", "Europe/", "../../etc/passwd",
                 "/etc/localtime", "UTC\x00", "x" * 65, HUGE, "+01:00", "GMT+25", "europe/berlin ", "localtime",
                 "Factory"],
}


@pytest.mark.parametrize("field", list(STORE_FIELDS))
async def test_create_store_sweep_by_field(raw, app, field):
    for value in STORE_FIELDS[field]:
        body = {"id": "s-1", "name": "Store"} | {field: value}
        assert_client_error(await send_json(raw, "POST", "/v1/stores", body), (field, value))
    assert await count(app, Store) == 0


async def test_create_store_sweep_non_json(raw, app):
    for body in [*NON_JSON, None, [], {}, {"name": "S", "extra": 1}, {"name": "S", "created_at": "2020-01-01"}]:
        assert_client_error(await send_json(raw, "POST", "/v1/stores", body), body)
    assert await count(app, Store) == 0


@pytest.mark.parametrize("path", ["/v1/stores", "/v1/api-keys"])
async def test_list_paging_sweep(raw, path):
    for query in ["?limit=0", "?limit=501", "?limit=abc", "?limit=1.5", "?limit=" + "9" * 100, "?after=%00",
                  "?after=" + "x" * 201, "?after=%ED%A0%80", "?limit=-5", "?after=%0A"]:
        r = await raw.get(path + query)
        if r.status_code == 200:
            assert isinstance(r.json()["data"], list), query
        else:
            assert_client_error(r, query)


async def test_api_key_id_sweep(raw, client):
    for key_id in ["%00", "x" * 10_000, "%ED%A0%80", "key_%0A", "%FF"]:
        assert_client_error(await raw.delete(f"/v1/api-keys/{key_id}"), key_id)
    for body in [{"role": "app", "name": "a\x00b"}, {"role": "app", "name": HUGE}, {"role": ["admin"]}]:
        assert_client_error(await send_json(raw, "POST", "/v1/api-keys", body), body)


# --- PUT /v1/program ----------------------------------------------------------------------------------------------

def with_path(program: dict, path: tuple, value: Any) -> dict:
    out = json.loads(json.dumps(program))
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


PROGRAM_CASES: dict[str, list[tuple[tuple, Any]]] = {
    "version": [(("version",), v) for v in (None, 0, -1, "one", 1.5, 10**30, 2**31, 2**63, 10**19,
                                            [], {})],
    "currency": [(("currency",), v) for v in (None, "", "usd", "XYZ", "US", "USDD", 840, [], "U\x00D", HUGE)],
    "numbers": [(("point_value",), v) for v in (0, -1, 10**30, 1.5, "one", None)]
    + [(("max_burn_percent",), v) for v in (101, -1, 10**30, 50.5, None)]
    + [(("points_expiry_months",), v) for v in (0, 121, -1, 10**30, "twelve")]
    + [(("tier_window_months",), v) for v in (0, 61, 10**30, None)],
    "tiers": [(("tiers",), v) for v in (None, [], {}, "gold", [None], [{}], [5], [{"code": "member"}] * 21)]
    + [(("tiers", 0, "min_qualifying_spend"), v) for v in (1, -1, 10**30, None, "zero", 0.5)]
    + [(("tiers", 1, "min_qualifying_spend"), v) for v in (0, 10**30, 150_000, 200_000)]
    + [(("tiers", 1, "code"), v) for v in ("member", "", "Gold Tier", "x" * 33, None, 5, "\x00")]
    + [(("tiers", 1, "earn_multiplier"), v) for v in (0, -1, 1e308, 1001, None, "two", [])]
    + [(("tiers", 1, "discount_percent"), v) for v in (-1, 101, 1e308, None)]
    + [(("tiers", 1, "name"), v) for v in ("", HUGE, None, 5, "\x00", "a\x00b")]
    + [(("tiers", 1, "perks"), v) for v in ("perk", [None], [""], ["x" * 201], ["p"] * 21, [HUGE])]
    + [(("tiers", 1, "unknown"), 1)],
    "earn": [(("earn",), v) for v in (None, [], "x", {"base_rate_per_major_unit": -1}, {"typo": 1})]
    + [(("earn", "base_rate_per_major_unit"), v) for v in (-1, 1e308, 1001, None, "one")]
    + [(("earn", "category_multipliers"), v) for v in ([], {"": 2}, {"food": 0}, {"food": -1}, {"food": None},
                                                      {"a b": 2}, {"x" * 65: 2}, {"food": "two"}, {"food\x00": 2})]
    + [(("earn", "sku_multipliers"), v) for v in ({"sku": 0}, {"sku": -1})]
    + [(("earn", "bonus_events"), v) for v in (
        {}, [None], [{"name": "B", "starts_at": "2020-01-01T00:00:00", "ends_at": "2020-02-01T00:00:00",
                      "multiplier": 2}],
        [{"name": "B", "starts_at": "2020-02-01T00:00:00Z", "ends_at": "2020-01-01T00:00:00Z", "multiplier": 2}],
        [{"name": "B", "starts_at": "2020-13-45T00:00:00Z", "ends_at": "2021-01-01T00:00:00Z", "multiplier": 2}],
        [{"name": "B", "starts_at": "not a date", "ends_at": "2021-01-01T00:00:00Z", "multiplier": 2}],
        [{"name": "B", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2021-01-01T00:00:00Z", "multiplier": 0}],
        [{"name": "", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2021-01-01T00:00:00Z", "multiplier": 2}],
        [{"name": "B", "starts_at": 10**20, "ends_at": 10**21, "multiplier": 2}],
        [{"name": "B", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2021-01-01T00:00:00Z", "multiplier": 2,
          "extra": True}],
    )],
    "rest": [(("wallet_top_up_bonuses",), v) for v in (
        {}, [None], [{"min_amount": 0, "bonus": 1}], [{"min_amount": 100, "bonus": -1}],
        [{"min_amount": 100, "bonus": 1}, {"min_amount": 100, "bonus": 2}], [{"min_amount": 10**30, "bonus": 1}])]
    + [(("referral",), v) for v in (None, [], {"referrer_points": -1}, {"referee_points": 10**30}, {"x": 1})]
    + [(("greetings",), v) for v in (
        [], "hi", {"en": "hi"}, {"en": {"Birthday!": "x"}}, {"english!": {"birthday": "x"}}, {"en": {"birthday": ""}},
        {"en": {"birthday": HUGE}}, {"en": {"birthday": None}})]
    + [(("unknown_field",), 1), (("id",), 1)],
}


@pytest.mark.parametrize("group", list(PROGRAM_CASES))
async def test_put_program_sweep(raw, client, group):
    program = (await client.get("/v1/program")).json()
    for path, value in PROGRAM_CASES[group]:
        r = await send_json(raw, "PUT", "/v1/program", with_path(program, path, value))
        assert_client_error(r, (path, value))
    assert (await client.get("/v1/program")).json() == program


async def test_put_program_sweep_non_json(raw, client):
    program = (await client.get("/v1/program")).json()
    for body in [*NON_JSON, None, [], {}, [program], {"program": program}]:
        assert_client_error(await send_json(raw, "PUT", "/v1/program", body), body)
    assert (await client.get("/v1/program")).json() == program


async def test_a_nul_character_in_free_text_never_reaches_a_500_nor_a_write(client, app):
    """PostgreSQL holds no NUL in text: a reason, a payment reference or a looked-up value carrying one is a 422
    naming the character there, with nothing written; SQLite stores it as sent."""
    member = (await f.enroll(client))["id"]
    entries = await f.entry_count(app)
    r = await client.post(f"/v1/members/{member}/points/adjustments", json={"amount": 5, "reason": "a\u0000b"},
                          headers={"Idempotency-Key": f.new_key()})
    top_up = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 500, "payment_ref": "p\u0000"},
                               headers={"Idempotency-Key": f.new_key()})
    quote = await client.post("/v1/checkout/quote", json={
        "store_id": "nowhere", "member": {"card_number": "12\u000034"}, "currency": "USD", "lines": [
            {"line_id": "1", "sku": "A", "quantity": 1, "unit_price": 100}]})
    if IS_POSTGRES:
        for answer in (r, top_up):
            problem = problem_of(answer)
            assert answer.status_code == 422 and problem["code"] == "validation_error", answer.text
            assert "NUL" in problem["detail"]
        assert await f.entry_count(app) == entries
    else:
        assert r.status_code == 201 and top_up.status_code == 201, (r.text, top_up.text)
    assert quote.status_code < 500, quote.text
