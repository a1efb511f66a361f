"""The redemption report through HTTP: points issued, redeemed, expired and adjusted in a period; vouchers and
punch card rewards issued in it by where they stand (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.points import service as points_service
from tests import factories as f
from tests.test_giftcards import issue_one, pay, tender
from tests.test_punchcards import coffee, make_program
from tests.test_vouchers import give, make_campaign, with_vouchers

EMPTY_COHORT = {"issued": 0, "redeemed": 0, "expired": 0, "open": 0, "withdrawn": 0, "redemption_rate": None}


async def report(client, **period) -> dict:
    r = await client.get("/v1/reports/redemptions", params={k: v.isoformat() for k, v in period.items()})
    assert r.status_code == 200, r.text
    return r.json()


async def sale(client, body: dict) -> dict:
    r = await f.commit(client, body)
    assert r.status_code == 201, r.text
    return r.json()


async def void(client, transaction_id: str) -> None:
    assert (await f.void(client, transaction_id)).status_code == 200


async def test_an_empty_program_reports_zeros_and_no_rates(client, clock):
    clock.freeze(datetime(2026, 12, 6, 12, tzinfo=UTC))
    assert await report(client) == {
        "from": None, "to": "2026-12-06T12:00:00Z", "as_of": "2026-12-06T12:00:00Z",
        "points": {"issued": 0, "redeemed": 0, "expired": 0, "adjusted": 0, "redemption_rate": None,
                   "expiry_rate": None},
        "gift_cards": {"issued": 0, "spent": 0, "redemption_rate": None},
        "vouchers": {**EMPTY_COHORT, "campaigns": []}, "punch_rewards": {**EMPTY_COHORT, "programs": []}}


async def test_points_are_counted_net_of_voids_and_returns_in_the_period(client, app, clock):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    start = clock.now()
    await f.adjust(client, member, 500)
    await f.adjust(client, member, -40)
    first = await sale(client, f.basket(member, store, [f.line(unit_price=10_000)]))  # earns 100
    second = await sale(client, f.basket(member, store, [f.line(unit_price=5_000)], points=200))  # earns 48
    third = await sale(client, f.basket(member, store, [f.line(unit_price=3_000)], points=100))  # earns 29
    await void(client, third["id"])  # its 100 points come back, its 29 are taken back
    r = await f.return_lines(client, first["id"], {"1": 1})  # the whole line: its 100 points are taken back
    assert r.status_code == 201, r.text
    earned = [t["earned"]["points"] for t in (first, second, third)]
    assert earned == [100, 48, 29]

    got = (await report(client))["points"]
    assert got == {"issued": 48, "redeemed": 200, "expired": 0, "adjusted": 460,
                   "redemption_rate": round(200 / 48, 4), "expiry_rate": 0.0}
    assert f.points_outstanding(got) == await f.held(app, "points") == await f.balance(client, member) == 308

    # Expiry: everything left in the lots, a year and a bit later, by the sweep.
    clock.advance(timedelta(days=800))
    async with app.state.db.transaction(write=True) as session:
        swept = await points_service.sweep_batch(session, clock.now(), clock.now())
    balance_before = 500 - 40 + 48 - 200
    assert swept.points == balance_before
    later = clock.now() - timedelta(days=1)
    assert (await report(client, **{"from": later}))["points"] == {
        "issued": 0, "redeemed": 0, "expired": balance_before, "adjusted": 0, "redemption_rate": None,
        "expiry_rate": None}
    assert (await report(client, to=start))["points"]["issued"] == 0  # before it all
    assert (await report(client, **{"from": start}))["points"]["expired"] == balance_before
    assert f.points_outstanding((await report(client))["points"]) == await f.held(app, "points") == 0
    await f.verify_ledger(app)


async def test_gift_card_value_issued_and_spent_net_of_voids(client, app, clock):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    start = clock.now()
    cards = [await issue_one(client, 5_000), await issue_one(client, 2_000)]
    first = await sale(client, pay(member, store, [f.line(unit_price=3_000)], [tender(cards[0])]))
    await sale(client, pay(member, store, [f.line(unit_price=1_500)], [tender(cards[1], 1_200)]))
    await void(client, first["id"])  # the 3,000 go back on the first card
    assert (await report(client))["gift_cards"] == {"issued": 7_000, "spent": 1_200, "redemption_rate": 0.1714}
    assert await f.held(app, "gift_card") == 7_000 - 1_200
    assert (await report(client, to=start))["gift_cards"]["issued"] == 0


async def test_vouchers_issued_in_the_period_by_where_they_stand(client, clock):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    targeted = await make_campaign(client, name="Five off", valid_days=10)
    threshold = await make_campaign(client, name="Spend 100, get 5", auto_issue={"spend_threshold": 10_000})
    used, kept, lapsing = [await give(client, targeted["id"], member) for _ in range(3)]
    await sale(client, with_vouchers(member, store, [f.line(unit_price=2_000)], [used["code"]]))
    earned = await sale(client, f.basket(member, store, [f.line(unit_price=10_000)]))
    assert [v["campaign_id"] for v in earned["earned"]["vouchers_issued"]] == [threshold["id"]]
    await void(client, earned["id"])  # the threshold voucher it earned is voided
    await sale(client, f.basket(member, store, [f.line(unit_price=12_000)]))  # another, kept

    got = (await report(client))["vouchers"]
    assert got["campaigns"] == [
        *sorted([{"campaign_id": targeted["id"], "name": "Five off", "issued": 3, "redeemed": 1, "expired": 0,
                  "open": 2, "withdrawn": 0, "redemption_rate": 0.3333},
                 {"campaign_id": threshold["id"], "name": "Spend 100, get 5", "issued": 2, "redeemed": 0,
                  "expired": 0, "open": 1, "withdrawn": 1, "redemption_rate": 0.0}],
                key=lambda c: c["campaign_id"])]
    assert {k: v for k, v in got.items() if k != "campaigns"} == {
        "issued": 5, "redeemed": 1, "expired": 0, "open": 3, "withdrawn": 1, "redemption_rate": 0.25}

    clock.advance(timedelta(days=11))  # the targeted vouchers end: the two unused count as expired, sweep or not
    got = (await report(client))["vouchers"]
    assert [(c["name"], c["expired"], c["open"]) for c in got["campaigns"]
            if c["campaign_id"] == targeted["id"]] == [("Five off", 2, 0)]
    assert (await report(client, **{"from": clock.now() - timedelta(days=1)}))["vouchers"] == {
        **EMPTY_COHORT, "campaigns": []}
    assert kept["id"] != lapsing["id"]


async def test_punch_card_rewards_issued_in_the_period_by_where_they_stand(client, clock):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    program = await make_program(client, name="Coffee card", stamps_required=1, reward_valid_days=7)
    first = await sale(client, f.basket(member, store, [coffee()]))
    reward = first["earned"]["rewards_issued"][0]["id"]
    await sale(client, f.basket(member, store, [coffee("d", 1)], redeem={"punch_rewards": [reward]}))
    returned = await sale(client, f.basket(member, store, [coffee("e", 1)]))  # a reward, revoked by the return
    r = await f.return_lines(client, returned["id"], {"e": 1})
    assert r.status_code == 201, r.text
    await sale(client, f.basket(member, store, [coffee("g", 1)]))  # a reward left open

    want = {"issued": 3, "redeemed": 1, "expired": 0, "open": 1, "withdrawn": 1, "redemption_rate": 0.5}
    got = (await report(client))["punch_rewards"]
    assert got == {**want, "programs": [{"program_id": program["id"], "name": "Coffee card", **want}]}
    clock.advance(timedelta(days=8))
    assert (await report(client))["punch_rewards"]["programs"][0]["expired"] == 1


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"from": "2026-12-06T00:00:00Z", "to": "2026-12-06T00:00:00Z"}, 422, "invalid_period"),
    ({"from": "2026-12-07T00:00:00Z", "to": "2026-12-06T00:00:00Z"}, 422, "invalid_period"),
    ({"from": "2026-12-06T00:00:00"}, 422, "validation_error"),  # no offset: which day's midnight?
    ({"to": "yesterday"}, 422, "validation_error"),
    ({"from": "-110186"}, 422, "validation_error"),  # digits are not a time (pydantic would read seconds)
])
async def test_a_period_that_cannot_be_is_refused(client, params, status, code):
    f.assert_problem(await client.get("/v1/reports/redemptions", params=params), status, code)


async def test_only_an_admin_reads_it(client, make_client):
    store = (await f.create_store(client))["id"]
    for role, store_id in (("pos", store), ("app", None)):
        key = await f.create_key(client, role, store_id)
        f.assert_problem(await make_client(key).get("/v1/reports/redemptions"), 403, "forbidden")
