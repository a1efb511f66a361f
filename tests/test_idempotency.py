"""Idempotency keys (API.md "Conventions"), proved on ``POST /v1/members`` (optional key) and on a small route
mounted for the test (required key): replay, conflicts, in-flight requests, stale claims, expiry, scope."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import event, func, insert, select, text, update

from service import idempotency
from service.auth.dependencies import ANY_ROLE
from service.auth.rules import Principal, bootstrap_key_id, hash_key
from service.errors import Conflict
from service.idempotency import IdempotencyRecord
from service.members.models import Member
from service.program.models import Store
from service.routing import Session, UnitOfWorkRoute, idempotent
from tests.conftest import ADMIN_KEY, IS_POSTGRES
from tests.factories import PROBLEM, assert_problem, create_key, create_store, enroll, unique_email, unique_phone

BOOTSTRAP_KEY_ID = bootstrap_key_id(hash_key(ADMIN_KEY))


async def member_count(app) -> int:
    async with app.state.db.session(write=False) as session:
        return (await session.execute(select(func.count()).select_from(Member))).scalar_one()


async def records(app) -> list[IdempotencyRecord]:
    async with app.state.db.session(write=False) as session:
        return list((await session.execute(select(IdempotencyRecord).order_by(IdempotencyRecord.id))).scalars())


def new_member() -> dict[str, Any]:
    return {"name": "Jane Doe", "phone": unique_phone(), "email": unique_email()}


async def enroll_with_key(client, body, key: str, **kwargs) -> httpx.Response:
    return await client.post("/v1/members", json=body, headers={"Idempotency-Key": key}, **kwargs)


# --- replay -------------------------------------------------------------------------------------------------------

async def test_same_key_same_body_replays_the_first_answer(client, app):
    body = new_member()
    first = await enroll_with_key(client, body, "enroll-1")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    second = await enroll_with_key(client, body, "enroll-1")
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"]
    third = await enroll_with_key(client, body, "enroll-1")
    assert third.content == first.content and third.headers["idempotent-replayed"] == "true"
    assert await member_count(app) == 1


async def test_replay_ignores_json_key_order_and_white_space(client, app):
    body = new_member()
    first = await enroll_with_key(client, body, "order-1")
    assert first.status_code == 201
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=4).encode()
    second = await client.post("/v1/members", content=reordered,
                               headers={"Idempotency-Key": "order-1", "Content-Type": "application/json"})
    assert second.status_code == 201 and second.headers.get("idempotent-replayed") == "true"
    assert second.json() == first.json()
    assert await member_count(app) == 1


async def test_without_a_key_each_post_is_new(client, app):
    first = await client.post("/v1/members", json={"name": "Jane"})
    second = await client.post("/v1/members", json={"name": "Jane"})
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers
    assert await member_count(app) == 2
    assert await records(app) == []


async def test_different_keys_are_different_requests(client, app):
    body = {"name": "Jane"}
    a = await enroll_with_key(client, body, "a")
    b = await enroll_with_key(client, body, "b")
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    assert await member_count(app) == 2


async def test_same_key_other_body_is_409(client, app):
    body = new_member()
    first = await enroll_with_key(client, body, "reuse-1")
    assert first.status_code == 201
    r = await enroll_with_key(client, {**body, "name": "Someone Else"}, "reuse-1")
    assert_problem(r, 409, "idempotency_key_reused")
    assert "idempotent-replayed" not in r.headers
    assert await member_count(app) == 1
    r = await enroll_with_key(client, body, "reuse-1")  # the original request still replays
    assert r.status_code == 201 and r.content == first.content


async def test_a_4xx_answer_is_replayed(client, app):
    existing = await enroll(client)
    body = {"name": "Copycat", "phone": existing["phone"]}
    first = await enroll_with_key(client, body, "dup-1")
    assert_problem(first, 409, "member_exists")
    # the phone becomes free; the same request with the same key still gets the first answer
    assert (await client.delete(f"/v1/members/{existing['id']}")).status_code == 204
    second = await enroll_with_key(client, body, "dup-1")
    assert second.status_code == 409 and second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert second.headers["content-type"].startswith(PROBLEM)
    assert await member_count(app) == 1
    # a new key runs the request again, and now it succeeds
    assert (await enroll_with_key(client, body, "dup-2")).status_code == 201


async def test_a_validation_error_is_replayed(client, app):
    first = await enroll_with_key(client, {"name": "J", "birthday": "2020-13-45"}, "bad-1")
    assert_problem(first, 422, "validation_error")
    second = await enroll_with_key(client, {"name": "J", "birthday": "2020-13-45"}, "bad-1")
    assert second.status_code == 422 and second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert await member_count(app) == 0


async def test_keys_are_scoped_to_the_api_key(client, make_client, app):
    other_admin = make_client(await create_key(client, "admin"))
    body = {"name": "Jane"}
    a = await enroll_with_key(client, body, "shared-key")
    b = await enroll_with_key(other_admin, body, "shared-key")
    assert a.status_code == b.status_code == 201
    assert "idempotent-replayed" not in b.headers
    assert a.json()["id"] != b.json()["id"]
    assert await member_count(app) == 2
    # each still replays its own answer
    assert (await enroll_with_key(other_admin, body, "shared-key")).json()["id"] == b.json()["id"]
    assert (await enroll_with_key(client, body, "shared-key")).json()["id"] == a.json()["id"]


async def test_replay_is_what_the_original_caller_saw(client, make_client):
    store = await create_store(client)
    pos = make_client(await create_key(client, "pos", store["id"]))
    body = {"name": "Till", "phone": "+14155552671"}
    first = await enroll_with_key(pos, body, "pos-1")
    assert first.status_code == 201 and "*" in first.json()["phone"]
    again = await enroll_with_key(pos, body, "pos-1")
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content


# --- invalid keys -------------------------------------------------------------------------------------------------

async def test_invalid_key_is_400(client, app):
    for key in ("k" * 256, "k" * 10_000, "", "tab\there", "del\x7f", "caf\xe9", "nul\x00", "esc\x1b"):
        r = await client.post("/v1/members", json={"name": "Jane"},
                              headers=[(b"Idempotency-Key", key.encode("latin-1"))])
        assert r.status_code == 400, key[:20]
        assert_problem(r, 400, "invalid_idempotency_key")
    assert await member_count(app) == 0
    assert await records(app) == []


async def test_longest_and_odd_printable_keys_are_fine(client):
    for key in ("k" * 255, "x", "a b", "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./"):
        r = await enroll_with_key(client, {"name": "Jane"}, key)
        assert r.status_code == 201, (key, r.text)
        assert (await enroll_with_key(client, {"name": "Jane"}, key)).headers["idempotent-replayed"] == "true"


# --- in flight, stale, expired ------------------------------------------------------------------------------------

async def insert_record(app, *, key: str, body: dict, locked_at, created_at=None, status="in_progress",
                        path: str = "/v1/members", answer: bytes | None = None) -> None:
    async with app.state.db.transaction() as session:
        session.add(IdempotencyRecord(
            api_key_id=BOOTSTRAP_KEY_ID, key=key,
            request_hash=idempotency.request_hash("POST", path, json.dumps(body).encode()), status=status,
            locked_at=locked_at, created_at=created_at or locked_at,
            **({"response_status": 201, "response_body": answer, "response_type": "application/json"}
               if answer is not None else {})))


async def test_a_request_in_flight_is_409(client, app, clock):
    body = new_member()
    await insert_record(app, key="busy-1", body=body, locked_at=clock.now())
    r = await enroll_with_key(client, body, "busy-1")
    assert_problem(r, 409, "request_in_progress")
    assert r.headers.get("retry-after")
    assert await member_count(app) == 0
    # another body with a key in flight is a reuse, not a wait
    assert_problem(await enroll_with_key(client, {"name": "Other"}, "busy-1"), 409, "idempotency_key_reused")


async def test_a_stale_claim_is_taken_over(client, app, clock, settings):
    body = new_member()
    await insert_record(app, key="stale-1", body=body,
                        locked_at=clock.now() - timedelta(seconds=settings.idempotency_lock_seconds + 5))
    r = await enroll_with_key(client, body, "stale-1")
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    [record] = await records(app)
    assert record.status == "completed" and record.response_status == 201
    again = await enroll_with_key(client, body, "stale-1")
    assert again.headers["idempotent-replayed"] == "true" and again.content == r.content
    assert await member_count(app) == 1


async def test_a_claim_just_inside_the_lock_is_still_in_flight(client, app, clock, settings):
    body = new_member()
    await insert_record(app, key="fresh-1", body=body,
                        locked_at=clock.now() - timedelta(seconds=settings.idempotency_lock_seconds - 5))
    assert_problem(await enroll_with_key(client, body, "fresh-1"), 409, "request_in_progress")


async def test_completing_a_claim_that_was_taken_over_fails(app, clock):
    """A slow first request whose claim changed hands must not record its answer (its work rolls back)."""
    body = new_member()
    claim = await idempotency.claim(
        app.state.db, api_key_id=BOOTSTRAP_KEY_ID, key="slow-1",
        req_hash=idempotency.request_hash("POST", "/v1/members", json.dumps(body).encode()), now=clock.now(),
        lock_seconds=60, ttl_days=7)
    assert isinstance(claim, idempotency.Claim)
    async with app.state.db.transaction() as session:  # someone else takes it over
        await session.execute(update(IdempotencyRecord).values(locked_at=clock.now() + timedelta(seconds=1)))
    async with app.state.db.transaction() as session:
        with pytest.raises(idempotency.RequestInProgress):
            await idempotency.complete(session, claim, status=201, body=b"{}", media_type="application/json")


async def test_records_older_than_the_ttl_are_forgotten(client, app, clock):
    body = new_member()
    first = await enroll_with_key(client, body, "old-1")
    assert first.status_code == 201
    clock.advance(timedelta(days=6, hours=23))
    assert (await enroll_with_key(client, body, "old-1")).headers.get("idempotent-replayed") == "true"
    clock.advance(timedelta(days=1, hours=2))
    # after the TTL the key is new again: another body is no conflict...
    other = await enroll_with_key(client, new_member(), "old-1")
    assert other.status_code == 201, other.text
    assert "idempotent-replayed" not in other.headers
    assert other.json()["id"] != first.json()["id"]
    assert await member_count(app) == 2
    assert len(await records(app)) == 1


async def test_expired_record_with_same_body_runs_again(client, app, clock):
    body = {"name": "Jane"}
    first = await enroll_with_key(client, body, "old-2")
    clock.advance(timedelta(days=8))
    second = await enroll_with_key(client, body, "old-2")
    assert second.status_code == 201 and "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]


async def test_records_are_kept_at_least_seven_days(settings):
    assert settings.idempotency_ttl_days >= 7


async def test_purge_removes_only_expired_records(client, app, clock):
    await enroll_with_key(client, {"name": "A"}, "p-1")
    clock.advance(timedelta(days=8))
    await enroll_with_key(client, {"name": "B"}, "p-2")
    async with app.state.db.transaction() as session:
        assert await idempotency.purge_expired(session, clock.now(), 7) == 1
    assert [r.key for r in await records(app)] == ["p-2"]


# --- concurrency --------------------------------------------------------------------------------------------------

async def test_two_identical_requests_at_once_create_one_member(client, make_client, app):
    body = new_member()
    other = make_client(ADMIN_KEY)
    results = await asyncio.gather(enroll_with_key(client, body, "race-1"), enroll_with_key(other, body, "race-1"))
    created = [r for r in results if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(created) == 1, [(r.status_code, r.headers.get("idempotent-replayed"), r.text) for r in results]
    [loser] = [r for r in results if r is not created[0]]
    if loser.status_code == 409:
        assert loser.json()["code"] == "request_in_progress"
    else:
        assert loser.status_code == 201 and loser.headers["idempotent-replayed"] == "true"
        assert loser.content == created[0].content
    assert await member_count(app) == 1
    final = await enroll_with_key(client, body, "race-1")
    assert final.headers["idempotent-replayed"] == "true" and final.content == created[0].content


async def test_many_identical_requests_at_once_create_one_member(client, make_client, app):
    body = new_member()
    clients = [make_client(ADMIN_KEY) for _ in range(6)]
    results = await asyncio.gather(*(enroll_with_key(c, body, "race-2") for c in clients))
    created = [r for r in results if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(created) == 1, [(r.status_code, r.headers.get("idempotent-replayed")) for r in results]
    for r in results:
        if r is created[0]:
            continue
        if r.status_code == 409:
            assert r.json()["code"] == "request_in_progress"
        else:
            assert r.headers["idempotent-replayed"] == "true" and r.content == created[0].content
    assert await member_count(app) == 1


# --- connections -------------------------------------------------------------------------------------------------

async def test_a_new_key_is_claimed_on_the_requests_own_connection(client, app, clock):
    """On PostgreSQL the key is held by the request's own transaction (a lock its first statement takes): a request
    with a key takes no more connections from the pool than one without (on SQLite, one more: the claim's). Every
    answer, replays and refusals included, gives its connections back."""
    engine = app.state.db.engine.sync_engine
    checkouts: list[object] = []

    def checkout(*_) -> None:
        checkouts.append(None)

    event.listen(engine, "checkout", checkout)
    try:
        assert (await client.post("/v1/members", json=new_member())).status_code == 201  # the API key cached
        checkouts.clear()
        assert (await client.post("/v1/members", json=new_member())).status_code == 201
        without_key = len(checkouts)
        checkouts.clear()
        body = new_member()
        assert (await enroll_with_key(client, body, "one-connection")).status_code == 201
        assert len(checkouts) == without_key + (0 if IS_POSTGRES else 1), (checkouts, without_key)
        assert (await enroll_with_key(client, body, "one-connection")).headers["idempotent-replayed"] == "true"
        assert_problem(await enroll_with_key(client, {"name": "Other"}, "one-connection"), 409,
                       "idempotency_key_reused")
        await insert_record(app, key="busy-2", body=body, locked_at=clock.now())
        assert_problem(await enroll_with_key(client, body, "busy-2"), 409, "request_in_progress")
    finally:
        event.remove(engine, "checkout", checkout)
    assert app.state.db.engine.pool.checkedout() == 0
    assert [r.key for r in await records(app) if r.status == "completed"] == ["one-connection"]


# --- a route that requires the key --------------------------------------------------------------------------------

class Declined(Conflict):
    code, title = "declined", "Declined"


@pytest.fixture
def charges(app) -> list[dict]:
    """``POST /test/charges``: requires an Idempotency-Key, counts the times it really ran."""
    calls: list[dict] = []
    router = APIRouter(route_class=UnitOfWorkRoute)

    @router.post("/test/charges", status_code=201, **idempotent(required=True))
    async def charge(body: dict[str, Any], request: Request, session: Session,
                     _: Principal = Depends(ANY_ROLE)) -> Any:
        # As every route that moves a balance, it reads before it acts: on PostgreSQL the key's check goes out
        # with (here: just before) the request's first statement (idempotency.hold).
        await session.execute(text("SELECT 1"))
        calls.append(body)
        await session.execute(insert(Store).values(id=f"charge-{len(calls)}", name="Charged", timezone="UTC",
                                                   created_at=request.app.state.clock.now()))
        if body.get("sneak"):  # another request with the key answers while this one runs
            await insert_record(request.app, key=request.headers["Idempotency-Key"], body=body,
                                locked_at=request.app.state.clock.now(), status="completed", path="/test/charges",
                                answer=b'{"run": "the other one"}')
        if body.get("decline"):
            raise Declined("no")
        if body.get("refuse"):
            return JSONResponse({"refused": len(calls)}, status_code=402)
        if body.get("crash"):
            raise RuntimeError("boom")
        return {"run": len(calls), "amount": body.get("amount")}

    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added
    return calls


async def test_missing_key_where_required_is_400(client, charges):
    assert_problem(await client.post("/test/charges", json={"amount": 5}), 400, "idempotency_key_required")
    assert charges == []


async def test_missing_api_key_on_a_required_route_is_401(make_client, charges):
    anonymous = make_client(None)
    assert_problem(await anonymous.post("/test/charges", json={"amount": 5}), 401, "unauthorized")
    assert_problem(await anonymous.post("/test/charges", json={"amount": 5}, headers={"Idempotency-Key": "x"}),
                   401, "unauthorized")
    assert charges == []


async def test_required_route_replays(client, charges):
    first = await client.post("/test/charges", json={"amount": 5}, headers={"Idempotency-Key": "c-1"})
    assert first.status_code == 201 and first.json() == {"run": 1, "amount": 5}
    again = await client.post("/test/charges", json={"amount": 5}, headers={"Idempotency-Key": "c-1"})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == {"run": 1, "amount": 5}
    assert len(charges) == 1
    assert_problem(await client.post("/test/charges", json={"amount": 6}, headers={"Idempotency-Key": "c-1"}),
                   409, "idempotency_key_reused")
    second = await client.post("/test/charges", json={"amount": 5}, headers={"Idempotency-Key": "c-2"})
    assert second.json() == {"run": 2, "amount": 5}


async def test_same_key_on_another_route_is_a_reuse(client, charges):
    assert (await client.post("/test/charges", json={"name": "Jane"},
                              headers={"Idempotency-Key": "k-1"})).status_code == 201
    assert_problem(await enroll_with_key(client, {"name": "Jane"}, "k-1"), 409, "idempotency_key_reused")


async def test_required_route_replays_a_raised_4xx(client, charges):
    first = await client.post("/test/charges", json={"decline": True}, headers={"Idempotency-Key": "d-1"})
    assert_problem(first, 409, "declined")
    again = await client.post("/test/charges", json={"decline": True}, headers={"Idempotency-Key": "d-1"})
    assert again.status_code == 409 and again.headers["idempotent-replayed"] == "true"
    assert len(charges) == 1


async def test_required_route_replays_a_returned_4xx(client, charges, app):
    first = await client.post("/test/charges", json={"refuse": True}, headers={"Idempotency-Key": "r-1"})
    assert first.status_code == 402
    again = await client.post("/test/charges", json={"refuse": True}, headers={"Idempotency-Key": "r-1"})
    assert again.status_code == 402 and again.headers.get("idempotent-replayed") == "true", again.text
    assert again.content == first.content
    assert len(charges) == 1


async def test_a_500_releases_the_key(app, charges):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        first = await c.post("/test/charges", json={"crash": True}, headers={"Idempotency-Key": "boom-1"})
        assert_problem(first, 500, "internal_error")
        again = await c.post("/test/charges", json={"crash": True}, headers={"Idempotency-Key": "boom-1"})
        assert again.status_code == 500 and "idempotent-replayed" not in again.headers
    assert len(charges) == 2
    assert await records(app) == []


# --- PostgreSQL: the key held by an advisory lock in the request's transaction ----------------------------------

async def charged(app) -> list[str]:
    async with app.state.db.session(write=False) as session:
        return list((await session.execute(select(Store.id).where(Store.id.like("charge-%")))).scalars())


@pytest.mark.postgres_only
async def test_a_key_held_by_a_running_request_is_409_and_free_the_moment_it_ends(client, app, charges):
    """While a transaction holds the key's lock (the first request, running), a duplicate is refused at its first
    statement with nothing written and no record; when that transaction ends without an answer (its process died:
    its connection closed), the retry runs at once: no claim has to lapse first."""
    key = "held-1"
    async with app.state.db.engine.connect() as holder:
        await holder.execute(text("BEGIN"))
        await holder.execute(select(func.pg_advisory_xact_lock(
            idempotency.LOCK_SPACE, idempotency.lock_number(BOOTSTRAP_KEY_ID, key))))
        r = await client.post("/test/charges", json={"amount": 5}, headers={"Idempotency-Key": key})
        assert_problem(r, 409, "request_in_progress")
        assert r.headers.get("retry-after")
        assert charges == [] and await charged(app) == [] and await records(app) == []
        await holder.rollback()
    r = await client.post("/test/charges", json={"amount": 5}, headers={"Idempotency-Key": key})
    assert r.status_code == 201 and r.json() == {"run": 1, "amount": 5}
    assert await charged(app) == ["charge-1"]
    assert [(rec.key, rec.status, rec.response_status) for rec in await records(app)] == [(key, "completed", 201)]


@pytest.mark.postgres_only
@pytest.mark.parametrize(("line", "currency", "code"), [
    ({"category": "general"}, "EUR", "currency_mismatch"),  # the checkout tells it after its first statement
    ({}, "USD", "validation_error"),  # refused before any statement: the key is checked as the answer is stored
])
async def test_a_refusal_while_the_key_is_held_is_409_and_not_remembered(client, app, line, currency, code):
    """A 4xx is the key's answer only once the key is free: while another request holds it (perhaps with another
    body, whose answer the key must keep), this one is a 409 that nothing remembers. The checkout also turns
    a member it cannot find into an answer given after its other checks; the key's check, which goes out with
    that member read, is not taken for one of those."""
    store = (await create_store(client))["id"]
    member = (await enroll(client))["id"]
    body = {"receipt_id": f"held-{code}", "member": {"member_id": member}, "store_id": store, "currency": currency,
            "lines": [{"line_id": "1", "sku": "SKU-1", "quantity": 1, "unit_price": 500, **line}]}
    key = f"held-{code}"
    async with app.state.db.engine.connect() as holder:
        await holder.execute(text("BEGIN"))
        await holder.execute(select(func.pg_advisory_xact_lock(
            idempotency.LOCK_SPACE, idempotency.lock_number(BOOTSTRAP_KEY_ID, key))))
        r = await client.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": key})
        assert_problem(r, 409, "request_in_progress")
        await holder.rollback()
    assert await records(app) == []
    assert_problem(await client.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": key}),
                   422, code)
    again = await client.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 422 and again.headers["idempotent-replayed"] == "true"


@pytest.mark.postgres_only
async def test_an_answer_that_lands_while_the_request_runs_wins(client, app, charges):
    """A duplicate can take the lock just after the first request committed, on a snapshot from before: its own
    answer's insert then fails on the key's unique index, its work rolls back whole and it answers with the
    record that is there."""
    r = await client.post("/test/charges", json={"sneak": True}, headers={"Idempotency-Key": "late-1"})
    assert r.status_code == 201 and r.headers["idempotent-replayed"] == "true"
    assert r.json() == {"run": "the other one"}
    assert await charged(app) == []  # this request's write rolled back
    assert len(await records(app)) == 1


@pytest.mark.postgres_only
async def test_a_refusal_that_finds_an_answer_landed_meanwhile_gives_that_answer(client, app, charges):
    """A 4xx is remembered after the request's work rolled back, the key's lock with it: if another request with
    the key answered in between, that answer is the key's, and this caller gets it too."""
    r = await client.post("/test/charges", json={"sneak": True, "decline": True},
                          headers={"Idempotency-Key": "late-2"})
    assert r.status_code == 201 and r.headers["idempotent-replayed"] == "true"
    assert r.json() == {"run": "the other one"}
    assert await charged(app) == [] and len(await records(app)) == 1
