"""The transactional outbox and the events feed: each change writes its event in its own transaction (a change
that rolls back leaves none), the feed reads them in commit order from a cursor, filtered by type."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from service.events import service as events_service
from service.events.models import Event
from tests import factories as f


async def feed(client, **params) -> list[dict]:
    r = await client.get("/v1/events", params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def all_events(client, types: str | None = None) -> list[dict]:
    """Every event in the feed, page by page (``limit=2`` so paging and the cursor are exercised)."""
    seen, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {}), **({"types": types} if types else {})}
        r = await client.get("/v1/events", params=params)
        assert r.status_code == 200, r.text
        seen += r.json()["data"]
        after = r.json()["next_cursor"]
        if after is None:
            return seen


async def outbox_count(app) -> int:
    async with app.state.db.transaction(write=False) as session:
        return int((await session.execute(select(func.count()).select_from(Event))).scalar_one())


async def test_every_change_writes_its_event_and_the_feed_reads_them_in_order(client, app, clock):
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 5000, "bonus": 500}])
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 300, reason="welcome")
    r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 5000, "payment_ref": "card-1"},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    sale = await f.commit(client, f.basket(member, store, [f.line("1", quantity=2, unit_price=1500)], points=100))
    assert sale.status_code == 201, sale.text
    txn = sale.json()
    r = await client.post(f"/v1/checkout/transactions/{txn['id']}/returns", json={"lines": [{"line_id": "1",
                          "quantity": 1}]}, headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    back = r.json()["reversed"]
    r = await client.post(f"/v1/checkout/transactions/{txn['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    assert (await client.delete(f"/v1/members/{member}")).status_code == 204

    got = await all_events(client)
    assert [e["type"] for e in got] == ["member.enrolled", "points.adjusted", "wallet.topped_up",
                                        "transaction.committed", "transaction.returned", "transaction.voided",
                                        "member.erased"]
    assert len({e["id"] for e in got}) == len(got) and all(e["id"].startswith("evt_") for e in got)
    by_type = {e["type"]: e["data"] for e in got}
    assert by_type["member.enrolled"]["member_id"] == member
    assert by_type["points.adjusted"] == {**by_type["points.adjusted"], "amount": 300, "reason": "welcome",
                                          "balance": 300}
    assert by_type["wallet.topped_up"]["bonus"] == 500 and by_type["wallet.topped_up"]["wallet"]["total"] == 5500
    committed = by_type["transaction.committed"]
    assert committed["id"] == txn["id"] and committed["totals"] == txn["totals"]
    assert committed["balances_after"] == txn["balances_after"] and committed["member_id"] == member
    assert by_type["transaction.returned"]["transaction_id"] == txn["id"]
    assert by_type["transaction.returned"]["status"] == "partially_returned"
    ledger = (await client.get(f"/v1/members/{member}/ledger", params={"limit": 500})).json()["data"]
    assert by_type["transaction.returned"]["ledger_transaction_id"] in {e["transaction_id"] for e in ledger}
    # The member's balances after the return, as a void's event gives them after the void.
    assert by_type["transaction.returned"]["balances_after"] == {
        "points": txn["balances_after"]["points"] - back["points"] + back["points_refunded"], "wallet": 5500}
    assert by_type["transaction.voided"]["status"] == "voided"
    assert by_type["member.erased"] == {"member_id": member}
    # Personal data never goes into an event (events outlive erasure).
    assert "Jane" not in str(got)

    # Filtering by type (comma-separated or repeated) keeps the order; the cursor is an event id.
    only = await all_events(client, types="transaction.voided,transaction.committed")
    assert [e["type"] for e in only] == ["transaction.committed", "transaction.voided"]
    r = await client.get("/v1/events", params=[("types", "member.enrolled"), ("types", "member.erased")])
    assert [e["type"] for e in r.json()["data"]] == ["member.enrolled", "member.erased"]
    after_sale = await feed(client, after=committed_id(got))
    assert [e["type"] for e in after_sale] == ["transaction.returned", "transaction.voided", "member.erased"]


async def test_transaction_events_carry_the_transaction_as_get_shows_it_a_void_with_its_own_balances(client, app):
    """README: transaction.committed / .voided data is the transaction as GET shows it, except a void's
    balances_after: the member's balances after the void (as the void's answer has them), where GET keeps the
    ones the sale left."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 500)
    sale = await f.commit(client, f.basket(member, store, [f.line("1", quantity=2, unit_price=1500)], points=100))
    assert sale.status_code == 201, sale.text
    txn = sale.json()["id"]
    shown = (await client.get(f"/v1/checkout/transactions/{txn}")).json()
    [committed] = [e["data"] for e in await all_events(client, "transaction.committed")]
    assert committed == shown
    voided_answer = await f.void(client, txn)
    assert voided_answer.status_code == 200, voided_answer.text
    shown = (await client.get(f"/v1/checkout/transactions/{txn}")).json()
    [voided] = [e["data"] for e in await all_events(client, "transaction.voided")]
    assert voided == {**shown, "balances_after": voided_answer.json()["balances_after"]}
    assert voided["balances_after"] == {"points": 500, "wallet": 0} != shown["balances_after"]


def committed_id(got: list[dict]) -> str:
    return next(e["id"] for e in got if e["type"] == "transaction.committed")


async def test_tier_changes_and_rewards_are_events_of_the_commit(client, app):
    await f.set_program(client, tiers=[
        {"code": "basic", "name": "Basic", "min_qualifying_spend": 0, "earn_multiplier": "1", "discount_percent": 0,
         "perks": []},
        {"code": "gold", "name": "Gold", "min_qualifying_spend": 5000, "earn_multiplier": "1",
         "discount_percent": 0, "perks": []}])
    r = await client.post("/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"skus": ["COFFEE"], "categories": []}, "stamps_required": 2,
        "reward": {"skus": ["COFFEE"], "categories": [], "max_value": 500}, "reward_valid_days": 30})
    assert r.status_code == 201, r.text
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    sale = await f.commit(client, f.basket(member, store, [f.line("1", sku="COFFEE", quantity=2, unit_price=3000)]))
    assert sale.status_code == 201, sale.text
    got = await all_events(client)
    assert [e["type"] for e in got] == ["member.enrolled", "reward.issued", "tier.changed", "transaction.committed"]
    tier = got[2]["data"]
    assert (tier["from"], tier["to"], tier["reason"]) == ("basic", "gold", "qualifying_spend")
    assert tier["transaction_id"] == sale.json()["id"] == got[1]["data"]["transaction_id"]
    assert got[1]["data"]["reward_id"] == sale.json()["earned"]["rewards_issued"][0]["id"]


async def test_a_referrers_credit_and_its_reversal_are_events_naming_the_referrer(client, app):
    """A referred member's first qualifying sale credits the referrer 500 points in a ledger transaction of the
    referrer's, and a void (or a return below the first spend) takes them back: the referrer's balance moves
    outside the sale's own events, so each move is an event of its own, in the sale's and the void's
    transaction, naming the referrer, with the points, the ledger transaction and the balance after it."""
    store = (await f.create_store(client))["id"]
    referrer = (await f.enroll(client))
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    sale = await f.commit(client, f.basket(friend, store, [f.line(unit_price=2_000)]))
    assert sale.status_code == 201, sale.text
    await f.adjust(client, referrer["id"], 10)
    r = await f.void(client, sale.json()["id"])
    assert r.status_code == 200, r.text
    assert await f.balance(client, referrer["id"]) == 10

    got = [e for e in await all_events(client) if e["type"] != "member.enrolled"]
    assert [e["type"] for e in got] == ["referral.rewarded", "transaction.committed", "points.adjusted",
                                        "referral.reversed", "transaction.voided"]
    r = await client.get(f"/v1/members/{referrer['id']}/ledger")
    credit, reversal = [next(e["transaction_id"] for e in r.json()["data"] if e["kind"] == kind)
                        for kind in ("referral_bonus", "void")]
    txn = sale.json()["id"]
    common = {"member_id": referrer["id"], "referred_member_id": friend, "points": 500, "transaction_id": txn}
    assert got[0]["data"] == {**common, "ledger_transaction_id": credit, "balance": 500}
    assert got[3]["data"] == {**common, "ledger_transaction_id": reversal, "reverses_ledger_transaction_id": credit,
                              "balance": 10}
    assert await feed(client, types="referral.rewarded,referral.reversed") == [got[0], got[3]]


async def test_points_expiry_from_the_sweep_is_an_event(client, app, clock):
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 250)
    async with app.state.db.transaction() as session:
        from service.points import service as points_service

        later = clock.now() + timedelta(days=3 * 366)
        await points_service.sweep_batch(session, later, later)
    expired = await feed(client, types="points.expired")
    assert [e["data"]["points"] for e in expired] == [250] and expired[0]["data"]["member_id"] == member


async def test_a_rolled_back_change_leaves_no_event(client, app, monkeypatch):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    before = await outbox_count(app)

    # Refused by the business rules: nothing written, no event.
    r = await f.commit(client, f.basket(member, store, points=10))
    f.assert_problem(r, 409, "insufficient_points")
    # The event is written, then the transaction fails: the event goes with it.
    original = events_service.emit

    async def emit_then_fail(session, type, data, **kw):
        await original(session, type, data, **kw)
        if type == "transaction.committed":
            raise RuntimeError("the database went away after the event was written")

    monkeypatch.setattr(events_service, "emit", emit_then_fail)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://test", headers=client.headers) as failing:
        r = await f.commit(failing, f.basket(member, store))
    assert r.status_code == 500
    assert await outbox_count(app) == before
    assert [e["type"] for e in await all_events(client)] == ["member.enrolled"]

    # A replayed request does not emit twice.
    monkeypatch.setattr(events_service, "emit", original)
    key = f.new_key()
    body = f.basket(member, store)
    first = await f.commit(client, body, receipt_id="r-replay", key=key)
    again = await f.commit(client, body, receipt_id="r-replay", key=key)
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert [e["type"] for e in await all_events(client)] == ["member.enrolled", "transaction.committed"]


async def test_feed_access_cursor_and_type_errors(client, app, make_client):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    app_client = make_client(await f.create_key(client, "app"))
    assert [e["type"] for e in await feed(app_client)] == ["member.enrolled"]
    pos = make_client(await f.create_key(client, "pos", store))
    f.assert_problem(await pos.get("/v1/events"), 403, "forbidden")
    f.assert_problem(await client.get("/v1/events", params={"after": "evt_nope"}), 422, "invalid_cursor")
    f.assert_problem(await client.get("/v1/events", params={"types": "member.exploded"}), 422, "validation_error")
    for naming_none in ("", " , "):  # found by make fuzz: `types=` read as "every type"
        f.assert_problem(await client.get("/v1/events", params={"types": naming_none}), 422, "validation_error")
    assert member


@pytest.mark.parametrize("limit", [1, 3])
async def test_paging_returns_each_event_once(client, app, limit):
    for _ in range(4):
        await f.enroll(client)
    ids, after = [], None
    while True:
        r = await client.get("/v1/events", params={"limit": limit, **({"after": after} if after else {})})
        ids += [e["id"] for e in r.json()["data"]]
        after = r.json()["next_cursor"]
        if after is None:
            break
    assert len(ids) == len(set(ids)) == 4
