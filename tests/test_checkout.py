"""Checkout through HTTP: quote, commit, void, returns (runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests import factories as f
from tests.server import run_cli


@pytest.fixture
async def shop(client):
    store = await f.create_store(client)
    member = await f.enroll(client)
    return store["id"], member["id"]


async def test_quote_answers_the_contract_and_writes_nothing(client, app, shop):
    store, member = shop
    await f.adjust(client, member, 500)
    before = await f.entry_count(app)
    r = await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=2000)], points=200))
    assert r.status_code == 200, r.text
    q = r.json()
    assert set(q) == {"member", "greeting", "offers", "nudges", "applied", "lines", "totals", "earn", "balances"}
    assert q["member"]["id"] == member and q["member"]["tier"] == "member"
    assert "Jane Doe" in q["greeting"]["text"] and q["greeting"]["locale"] == "en"
    assert q["applied"] == [{"kind": "points", "id": None, "line_id": None, "amount": 200, "points": 200}]
    assert q["lines"] == [{"line_id": "1", "discount": 200, "net": 1800}]
    assert q["totals"] == {"subtotal": 2000, "discount": 200, "net": 1800, "wallet": 0, "gift_cards": 0,
                           "payable": 1800}
    assert q["earn"] == {"points": 18, "bonus_points": 0, "stamps": [], "qualifying_spend": 1800}
    assert q["balances"] == {"points": 500, "wallet": 0}
    points_offer = next(o for o in q["offers"] if o["kind"] == "points")
    assert points_offer["applicable"] and points_offer["value"] == 500
    assert await f.entry_count(app) == before
    assert await f.balance(client, member) == 500


async def test_earning_with_category_sku_tier_and_bonus_event(client, shop, clock):
    store, member = shop
    now = datetime.now(UTC)
    program = (await client.get("/v1/program")).json()
    program["tiers"][0]["earn_multiplier"] = 1.5
    program["earn"] = {
        "base_rate_per_major_unit": 2,
        "category_multipliers": {"coffee": 2},
        "sku_multipliers": {"BEAN-1": 3},  # the SKU wins over its category (3, not 6)
        "bonus_events": [
            {"name": "Snack week", "starts_at": (now - timedelta(days=1)).isoformat(),
             "ends_at": (now + timedelta(days=1)).isoformat(), "multiplier": 4, "categories": ["snacks"]},
            {"name": "Over", "starts_at": (now - timedelta(days=9)).isoformat(),
             "ends_at": (now - timedelta(days=8)).isoformat(), "multiplier": 10},
        ],
    }
    assert (await client.put("/v1/program", json=program)).status_code == 200
    lines = [
        f.line("a", "CUP-1", "coffee", 1, 1000),  # 10.00 * 2 * 2 * 1.5 = 60
        f.line("b", "BEAN-1", "coffee", 2, 550),  # 11.00 * 2 * 3 * 1.5 = 99
        f.line("c", "CHIPS", "snacks", 1, 125),  # 1.25 * 2 * 4 * 1.5 = 15
        f.line("d", "SOAP", "home", 1, 333),  # 3.33 * 2 * 1.5 = 9.99
    ]
    r = await f.commit(client, f.basket(member, store, lines))
    assert r.status_code == 201, r.text
    assert r.json()["earned"]["points"] == 183  # 183.99, floored once
    assert await f.balance(client, member) == 183

    # After the event window the snacks earn the plain rate.
    clock.advance(timedelta(days=2))
    r = await f.commit(client, f.basket(member, store, [f.line("c", "CHIPS", "snacks", 1, 125)]))
    assert r.json()["earned"]["points"] == 3  # 3.75


async def test_points_are_summed_unrounded_and_floored_once(client, shop):
    store, member = shop
    lines = [f.line(str(i), unit_price=150) for i in range(3)]  # 1.5 points each
    r = await f.commit(client, f.basket(member, store, lines))
    assert r.json()["earned"]["points"] == 4  # 4.5 -> 4 (per-line rounding would give 3 or 6)


async def test_burning_spreads_the_discount_exactly_and_rounds_half_up(client, shop, app):
    store, member = shop
    await f.adjust(client, member, 1000)
    await f.set_program(client, point_value=5)
    lines = [f.line("1", unit_price=100), f.line("2", unit_price=100), f.line("3", unit_price=101)]
    r = await f.commit(client, f.basket(member, store, lines, points=20))  # 100 minor units over 301
    assert r.status_code == 201, r.text
    t = r.json()
    discounts = [ln["discount"] for ln in t["lines"]]
    assert sum(discounts) == 100 and discounts == [33, 33, 34]
    assert t["totals"]["net"] == 201 and all(ln["net"] >= 0 for ln in t["lines"])
    assert t["balances_after"]["points"] == 1000 - 20 + 2  # earned on 2.01
    await f.verify_ledger(app)


async def test_burning_is_capped_by_max_burn_percent(client, shop):
    store, member = shop
    await f.adjust(client, member, 10_000)
    await f.set_program(client, max_burn_percent=50, point_value=2)
    body = f.basket(member, store, [f.line(unit_price=1001)], points=251)
    r = await client.post("/v1/checkout/quote", json=body)
    assert r.status_code == 422 and r.json()["code"] == "points_over_limit", r.text
    assert r.json()["max_points"] == 250 and "250" in r.json()["detail"]
    r = await f.commit(client, body)
    assert r.status_code == 422 and r.json()["code"] == "points_over_limit"
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=1001)], points=250))
    assert r.status_code == 201 and r.json()["totals"]["net"] == 501
    assert await f.balance(client, member) == 10_000 - 250 + 5


async def test_burning_more_than_the_balance_is_refused(client, shop, app):
    store, member = shop
    await f.adjust(client, member, 99)
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=5000)], points=100))
    assert r.status_code == 409 and r.json()["code"] == "insufficient_points", r.text
    assert await f.balance(client, member) == 99
    await f.verify_ledger(app)


async def test_tier_discount_applies_per_line_before_points(client, shop):
    store, member = shop
    program = (await client.get("/v1/program")).json()
    program["tiers"][0]["discount_percent"] = 10
    program["max_burn_percent"] = 100
    assert (await client.put("/v1/program", json=program)).status_code == 200
    await f.adjust(client, member, 1000)
    lines = [f.line("1", unit_price=995), f.line("2", unit_price=5)]  # 99.5 -> 100 and 0.5 -> 1 (half up)
    # the cap is counted on the net after the tier discount: 1000 - 101 = 899
    r = await f.commit(client, f.basket(member, store, lines, points=900))
    assert r.status_code == 422 and r.json()["code"] == "points_over_limit"
    r = await f.commit(client, f.basket(member, store, lines, points=899))
    assert r.status_code == 201, r.text
    t = r.json()
    tier = [a for a in t["applied"] if a["kind"] == "tier_discount"]
    assert [(a["line_id"], a["amount"], a["id"]) for a in tier] == [("1", 100, "member"), ("2", 1, "member")]
    assert t["totals"] == {"subtotal": 1000, "discount": 1000, "net": 0, "wallet": 0, "gift_cards": 0, "payable": 0}
    assert t["earned"]["points"] == 0 and t["balances_after"]["points"] == 101


async def test_replayed_commit_earns_once(client, shop, app):
    store, member = shop
    body = {"receipt_id": "R-1", **f.basket(member, store, [f.line(unit_price=5000)])}
    headers = {"Idempotency-Key": "till-7-0001"}
    first = await client.post("/v1/checkout/transactions", json=body, headers=headers)
    assert first.status_code == 201
    again = await client.post("/v1/checkout/transactions", json=body, headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await f.balance(client, member) == 50
    other = await client.post("/v1/checkout/transactions", json={**body, "receipt_id": "R-2"}, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    missing = await client.post("/v1/checkout/transactions", json={**body, "receipt_id": "R-3"})
    assert missing.status_code == 400 and missing.json()["code"] == "idempotency_key_required"
    await f.verify_ledger(app)


async def test_duplicate_receipt_is_refused_per_store(client, shop):
    store, member = shop
    other_store = (await f.create_store(client))["id"]
    assert (await f.commit(client, f.basket(member, store), receipt_id="R-9")).status_code == 201
    key = f.new_key()
    r = await f.commit(client, f.basket(member, store), receipt_id="R-9", key=key)
    assert r.status_code == 409 and r.json()["code"] == "duplicate_receipt"
    again = await f.commit(client, f.basket(member, store), receipt_id="R-9", key=key)  # the answer is kept
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == r.json()
    r = await f.commit(client, f.basket(member, store, points=10**6), receipt_id="R-9")  # the receipt says it first
    assert r.status_code == 409 and r.json()["code"] == "duplicate_receipt"
    assert (await f.commit(client, f.basket(member, other_store), receipt_id="R-9")).status_code == 201
    assert await f.balance(client, member) == 20


async def test_a_till_that_lost_the_answer_reads_the_sale_by_its_receipt_number(client, make_client, shop):
    store, member = shop
    other_store = (await f.create_store(client))["id"]
    till = make_client(await f.create_key(client, "pos", store))
    sale = await f.commit(till, f.basket(member, store), receipt_id="R/2026/0042")  # numbers may hold slashes
    assert sale.status_code == 201, sale.text
    # The answer was lost, and the key with it: committing again says the receipt is taken and where to read it.
    r = await f.commit(till, f.basket(member, store), receipt_id="R/2026/0042")
    detail = f.assert_problem(r, 409, "duplicate_receipt")["detail"]  # the path, or its template (PostgreSQL:
    assert "/v1/stores/" in detail and "/receipts/" in detail  # the unique index refuses it, as the last write)
    found = await till.get(f"/v1/stores/{store}/receipts/R/2026/0042")
    assert found.status_code == 200, found.text
    assert found.json() == (await till.get(f"/v1/checkout/transactions/{sale.json()['id']}")).json()
    assert (await f.void(till, found.json()["id"])).status_code == 200  # the till can now undo it
    f.assert_problem(await till.get(f"/v1/stores/{store}/receipts/R-none"), 404, "transaction_not_found")
    elsewhere = make_client(await f.create_key(client, "pos", other_store))
    f.assert_problem(await elsewhere.get(f"/v1/stores/{store}/receipts/R/2026/0042"), 403, "forbidden")


async def test_void_after_points_were_partly_spent_goes_negative_and_blocks_burning(client, shop, app):
    store, member = shop
    earn = (await f.commit(client, f.basket(member, store, [f.line(unit_price=10_000)]))).json()
    assert earn["balances_after"]["points"] == 100
    spend = await f.commit(client, f.basket(member, store, [f.line(unit_price=6_000)], points=60))
    assert spend.status_code == 201 and spend.json()["balances_after"]["points"] == 40 + 59

    r = await client.post(f"/v1/checkout/transactions/{earn['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "voided" and r.json()["balances_after"]["points"] == -1
    assert await f.balance(client, member) == -1
    await f.verify_ledger(app)

    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=1000)], points=1))
    assert r.status_code == 409 and r.json()["code"] == "insufficient_points"
    r = await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=1000)]))
    points_offer = next(o for o in r.json()["offers"] if o["kind"] == "points")
    assert not points_offer["applicable"] and "owes" in points_offer["reason"]

    again = await client.post(f"/v1/checkout/transactions/{earn['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert again.status_code == 409 and again.json()["code"] == "transaction_not_voidable"

    # Later earning repays the debt first; the lot holds only what is left over.
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=500)]))
    assert r.json()["balances_after"]["points"] == 4
    assert (await client.get(f"/v1/members/{member}/points")).json()["expiring"][-1]["amount"] == 4
    await f.verify_ledger(app)
    got = await client.get(f"/v1/checkout/transactions/{earn['id']}")
    assert got.status_code == 200 and got.json()["status"] == "voided"


async def test_void_puts_burned_points_back_into_the_same_lots(client, shop, clock, app):
    store, member = shop
    await f.adjust(client, member, 30)
    clock.advance(timedelta(days=40))
    await f.adjust(client, member, 30)
    before = (await client.get(f"/v1/members/{member}/points")).json()["expiring"]
    assert [e["amount"] for e in before] == [30, 30]
    spend = await f.commit(client, f.basket(member, store, [f.line(unit_price=4000)], points=40))
    after = (await client.get(f"/v1/members/{member}/points")).json()["expiring"]
    assert [(e["amount"], e["expires_at"]) for e in after][:1] == [(20, before[1]["expires_at"])]
    r = await client.post(f"/v1/checkout/transactions/{spend.json()['id']}/void",
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200 and r.json()["balances_after"]["points"] == 60
    assert (await client.get(f"/v1/members/{member}/points")).json()["expiring"] == before
    await f.verify_ledger(app)


async def test_a_burn_drawing_on_more_lots_than_the_first_page_takes_the_soonest_expiring(client, shop, clock, app):
    """The commit reads the first page of open lots with its other reads under the member's lock; a burn that
    needs more reads the next page then, and draws them all in expiry order."""
    store, member = shop
    for _ in range(20):  # 20 lots of 10 points, each expiring a day after the one before
        await f.adjust(client, member, 10)
        clock.advance(timedelta(days=1))
    before = (await client.get(f"/v1/members/{member}/points")).json()
    assert before["balance"] == 200
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=50_000)], points=185))
    assert r.status_code == 201, r.text
    assert r.json()["balances_after"]["points"] == 200 - 185 + r.json()["earned"]["points"]
    left = [e for e in (await client.get(f"/v1/members/{member}/points")).json()["expiring"]
            if e["expires_at"] <= before["expiring"][-1]["expires_at"]]
    assert [(e["amount"], e["expires_at"]) for e in left] == [(5, before["expiring"][18]["expires_at"]),
                                                           (10, before["expiring"][19]["expires_at"])]
    await f.verify_ledger(app)


async def test_partial_and_repeated_returns(client, shop, app):
    store, member = shop
    await f.adjust(client, member, 100)
    lines = [f.line("1", "A", quantity=3, unit_price=333), f.line("2", "B", quantity=1, unit_price=1001)]
    t = (await f.commit(client, f.basket(member, store, lines, points=100))).json()
    earned = t["earned"]["points"]
    assert earned == 19  # (999 + 1001 - 100) / 100 = 19.00
    url = f"/v1/checkout/transactions/{t['id']}/returns"

    async def ret(body):
        return await client.post(url, json=body, headers={"Idempotency-Key": f.new_key()})

    r1 = await ret({"lines": [{"line_id": "1", "quantity": 1}]})
    assert r1.status_code == 201, r1.text
    assert r1.json()["transaction_id"] == t["id"]
    assert (await client.get(f"/v1/checkout/transactions/{t['id']}")).json()["status"] == "partially_returned"
    too_many = await ret({"lines": [{"line_id": "1", "quantity": 3}]})
    assert too_many.status_code == 422 and too_many.json()["code"] == "return_exceeds_purchase"
    unknown = await ret({"lines": [{"line_id": "9", "quantity": 1}]})
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_line"
    r2 = await ret({"lines": [{"line_id": "1", "quantity": 2}, {"line_id": "2", "quantity": 1}]})
    assert r2.status_code == 201, r2.text
    assert (await client.get(f"/v1/checkout/transactions/{t['id']}")).json()["status"] == "returned"
    reversed_ = [r1.json()["reversed"], r2.json()["reversed"]]
    assert sum(x["points"] for x in reversed_) == earned
    assert sum(x["points_refunded"] for x in reversed_) == 100
    assert sum(x["qualifying_spend"] for x in reversed_) == t["totals"]["net"]
    assert await f.balance(client, member) == 100
    done = await ret({"lines": [{"line_id": "2", "quantity": 1}]})
    assert done.status_code == 409 and done.json()["code"] == "transaction_not_returnable"
    void = await client.post(f"/v1/checkout/transactions/{t['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert void.status_code == 409
    await f.verify_ledger(app)


async def test_a_sale_earning_more_points_than_a_balance_holds_is_refused(client, shop, app):
    """A base rate of 1000, a SKU's 1000 and a tier's 1000, each within its bounds, on a line of 10**12: 10**19
    points, past a 64-bit balance. The commit answered 500; quote and commit now refuse it."""
    store, member = shop
    tiers = (await client.get("/v1/program")).json()["tiers"]
    tiers[0]["earn_multiplier"] = 1000
    await f.set_program(client, earn={"base_rate_per_major_unit": 1000, "sku_multipliers": {"BIG": 1000}},
                        tiers=tiers)
    body = f.basket(member, store, [f.line(sku="BIG", unit_price=10**12)])
    for r in (await client.post("/v1/checkout/quote", json=body), await f.commit(client, body)):
        problem = f.assert_problem(r, 422, "sale_earns_too_many_points")
        assert problem["max_points"] == 10**12
    assert await f.balance(client, member) == 0
    # A bonus event of 1000 too: 10**22 points, past what the body's JSON could carry as a number. The 422 was a
    # 500 (the body could not be written); it leaves the figure to the detail.
    window = {"starts_at": "2000-01-01T00:00:00Z", "ends_at": "2100-01-01T00:00:00Z"}
    await f.set_program(client, earn={"base_rate_per_major_unit": 1000, "sku_multipliers": {"BIG": 1000},
                                      "bonus_events": [{"name": "B", "multiplier": 1000, **window}]})
    for r in (await client.post("/v1/checkout/quote", json=body), await f.commit(client, body)):
        problem = f.assert_problem(r, 422, "sale_earns_too_many_points")
        assert "points" not in problem and "10,000,000,000,000,000,000,000 points" in problem["detail"], problem
    await f.verify_ledger(app)


async def test_burned_points_come_back_with_the_units_that_carry_them(client, shop, app):
    """A point worth 1.00 burned on 2 units at 3.00, the rest from the wallet: the first unit back carries half a
    point. Rounded up, it came back whole with that unit (3.50 of value for a unit that cost 3.00); it now comes
    back with the last."""
    from tests.test_wallet import top_up

    store, member = shop
    await f.set_program(client, point_value=100)
    await f.adjust(client, member, 1)
    assert (await top_up(client, member, 500)).status_code == 201
    r = await f.commit(client, f.basket(member, store, [f.line("x", quantity=2, unit_price=300)],
                                        redeem={"points": 1, "wallet_amount": 500}))
    assert r.status_code == 201, r.text
    assert (r.json()["totals"]["net"], r.json()["totals"]["payable"]) == (500, 0)
    first = (await f.return_lines(client, r.json()["id"], {"x": 1})).json()["reversed"]
    assert (first["wallet"], first["points_refunded"]) == (250, 0)
    last = (await f.return_lines(client, r.json()["id"], {"x": 1})).json()["reversed"]
    assert (last["wallet"], last["points_refunded"]) == (250, 1)
    await f.verify_ledger(app)


async def test_returned_points_are_exact_shares_floored_once(client, shop, app):
    """Shares of points that add up to whole points come back whole. The burned points were kept per line as
    decimals of 28 digits, and the earned ones divided per unit at 28 digits: three thirds summed to 0.999...9."""
    store, member = shop
    # A point worth 3: 20 points (60) over nets 1000, 1000, 1000 and 3000 take 10, 10, 10 and 30 off, 10/3 points
    # on each of the first three lines. Those three back: 10 points, not 9.
    await f.set_program(client, point_value=3)
    await f.adjust(client, member, 20)
    lines = [f.line(x, sku=f"S-{x}", unit_price=1000) for x in "abc"] + [f.line("d", sku="S-d", unit_price=3000)]
    r = await f.commit(client, f.basket(member, store, lines, points=20))
    assert [ln["discount"] for ln in r.json()["lines"]] == [10, 10, 10, 30], r.text
    back = (await f.return_lines(client, r.json()["id"], {"a": 1, "b": 1, "c": 1})).json()["reversed"]
    assert back["points_refunded"] == 10, back
    # A point worth 1: three lines of 3 units, each netting 100 after a burn of 600, earn 1 point each (a third
    # of a point per unit). One unit of each back takes 1 point, not 0.
    await f.set_program(client, point_value=1)
    await f.adjust(client, member, 600)
    r = await f.commit(client, f.basket(member, store, [f.line(x, sku=f"S-{x}", quantity=3, unit_price=100)
                                                        for x in "abc"], points=600))
    assert [ln["net"] for ln in r.json()["lines"]] == [100] * 3 and r.json()["earned"]["points"] == 3, r.text
    back = (await f.return_lines(client, r.json()["id"], {"a": 1, "b": 1, "c": 1})).json()["reversed"]
    assert (back["points"], back["points_refunded"]) == (1, 200), back
    await f.verify_ledger(app)


async def test_a_return_slip_number_is_taken_once_per_sale(client, shop, app):
    """A till that lost a return's answer and its idempotency key sends the return again with a new key: the slip
    number it gave stops it returning the goods twice, even when both arrive at once."""
    store, member = shop
    sale = (await f.commit(client, f.basket(member, store, [f.line(quantity=4, unit_price=2500)]))).json()
    other = (await f.commit(client, f.basket(member, store, [f.line(quantity=1, unit_price=2500)]))).json()
    url = f"/v1/checkout/transactions/{sale['id']}/returns"

    async def ret(slip, quantity=1, transaction=url):
        return await client.post(transaction, json={"lines": [{"line_id": "1", "quantity": quantity}],
                                                    **({"receipt_id": slip} if slip else {})},
                                 headers={"Idempotency-Key": f.new_key()})

    first = await ret("RET-1")
    assert first.status_code == 201 and first.json()["receipt_id"] == "RET-1", first.text
    again = f.assert_problem(await ret("RET-1"), 409, "duplicate_return")
    assert again["return_id"] == first.json()["id"] and "RET-1" in again["detail"]
    assert await f.balance(client, member) == 125 - 25
    both = await asyncio.gather(ret("RET-2"), ret("RET-2"))
    assert sorted(r.status_code for r in both) == [201, 409], [r.text for r in both]
    assert (await ret(None)).status_code == 201 and (await ret(None)).status_code == 201  # no number: not compared
    assert (await client.get(f"/v1/checkout/transactions/{sale['id']}")).json()["status"] == "returned"
    f.assert_problem(await ret("RET-2"), 409, "duplicate_return")  # before "nothing more can be returned"
    f.assert_problem(await ret("RET-9"), 409, "transaction_not_returnable")
    elsewhere = await ret("RET-1", transaction=f"/v1/checkout/transactions/{other['id']}/returns")
    assert elsewhere.status_code == 201, elsewhere.text  # numbers are the sale's own
    assert await f.balance(client, member) == 0
    await f.verify_ledger(app)


async def test_void_after_a_partial_return_reverses_only_the_rest(client, shop, app):
    store, member = shop
    t = (await f.commit(client, f.basket(member, store, [f.line(quantity=4, unit_price=2500)]))).json()
    assert t["earned"]["points"] == 100
    r = await client.post(f"/v1/checkout/transactions/{t['id']}/returns",
                          json={"lines": [{"line_id": "1", "quantity": 1}]}, headers={"Idempotency-Key": f.new_key()})
    assert r.json()["reversed"]["points"] == 25
    v = await client.post(f"/v1/checkout/transactions/{t['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert v.status_code == 200 and v.json()["balances_after"]["points"] == 0
    await f.verify_ledger(app)


async def test_points_the_sweep_expired_are_not_clawed_back_again(client, shop, clock, app, cli_env):
    """A sale's 100 points, 30 spent and 70 expired: returning half claws back 30, not 50 (the member lost the
    other 70 to expiry once already), and returning the rest claws back nothing. A sale's 40 points, 20 spent and
    20 expired: its void claws back 20. A void of a sale whose points all expired takes none."""
    store, member = shop
    other = (await f.enroll(client))["id"]
    start = clock.now()
    returned = (await f.commit(client, f.basket(member, store, [f.line(quantity=2, unit_price=5000)]))).json()
    voided = (await f.commit(client, f.basket(other, store, [f.line(unit_price=4000)]))).json()
    clock.advance(timedelta(days=1))
    expired = (await f.commit(client, f.basket(other, store, [f.line(unit_price=2000)]))).json()
    assert [t["earned"]["points"] for t in (returned, voided, expired)] == [100, 40, 20]
    clock.advance(timedelta(days=61))
    spend = await f.commit(client, f.basket(member, store, [f.line(unit_price=5000)], points=30))
    assert spend.status_code == 201 and spend.json()["balances_after"]["points"] == 100 - 30 + 49
    spend = await f.commit(client, f.basket(other, store, [f.line(unit_price=2000)], points=20))
    assert spend.status_code == 201 and spend.json()["balances_after"]["points"] == 60 - 20 + 19
    assert await run_cli("sweep", "--allow-future", "--as-of", (start + timedelta(days=370)).isoformat()) == 0
    assert [await f.balance(client, m) for m in (member, other)] == [49, 19]

    first = await f.return_lines(client, returned["id"], {"1": 1})
    assert first.status_code == 201 and first.json()["reversed"]["points"] == 30, first.text
    assert await f.balance(client, member) == 19
    rest = await f.return_lines(client, returned["id"], {"1": 1})
    assert rest.status_code == 201 and rest.json()["reversed"]["points"] == 0, rest.text
    assert await f.balance(client, member) == 19
    r = await f.void(client, voided["id"])
    assert r.status_code == 200 and r.json()["balances_after"]["points"] == 19 - 20, r.text
    r = await f.void(client, expired["id"])
    assert r.status_code == 200 and r.json()["balances_after"]["points"] == -1, r.text
    await f.verify_ledger(app)


async def test_currency_mismatch_and_unknown_member(client, shop):
    store, member = shop
    r = await client.post("/v1/checkout/quote", json=f.basket(member, store, currency="EUR"))
    assert r.status_code == 422 and r.json()["code"] == "currency_mismatch"
    r = await f.commit(client, f.basket(member, store, currency="EUR"))
    assert r.status_code == 422 and r.json()["code"] == "currency_mismatch"
    r = await f.commit(client, f.basket("mem_nobody", store))
    assert r.status_code == 404 and r.json()["code"] == "member_not_found"
    body = f.basket(member, store)
    body["member"] = {"card_number": "8000000000000000"}
    r = await client.post("/v1/checkout/quote", json=body)
    assert r.status_code in (404, 422) and r.json()["code"] in ("member_not_found", "invalid_card_number")
    r = await f.commit(client, f.basket(member, "no-such-store"))
    assert r.status_code == 404 and r.json()["code"] == "store_not_found"


async def test_member_found_by_card_number_and_phone(client, shop):
    store, _ = shop
    m = await f.enroll(client, phone="+14155550123")
    for ref in ({"card_number": m["card_number"]}, {"phone": "+1 415 555 0123"}):
        body = f.basket("x", store)
        body["member"] = ref
        r = await client.post("/v1/checkout/quote", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["member"]["id"] == m["id"]
    body = f.basket("x", store)
    body["member"] = {"phone": "12"}
    for r in (await client.post("/v1/checkout/quote", json=body), await f.commit(client, body)):
        assert f.assert_problem(r, 422, "validation_error")["errors"][0]["loc"] == ["body", "member", "phone"]


BAD_LINES = [
    [f.line(quantity=0)],
    [f.line(quantity=-1)],
    [f.line(quantity=10**6 + 1)],
    [f.line(quantity=1.5)],
    [f.line(quantity="2")],
    [f.line(unit_price=-1)],
    [f.line(unit_price=10**12 + 1)],
    [f.line(quantity=10**6, unit_price=10**7)],  # the line total is over the limit
    [f.line("1"), f.line("1")],  # line ids repeat
    [{**f.line(), "colour": "red"}],  # unknown field
    [{"line_id": "1", "sku": "A", "category": "c", "quantity": 1}],  # no price
    [f.line(sku="")],
    [f.line(line_id="x" * 65)],
    [],
    [f.line(str(i)) for i in range(501)],
]


@pytest.mark.parametrize("lines", BAD_LINES)
async def test_bad_lines_are_422_and_write_nothing(client, shop, app, lines):
    store, member = shop
    r = await f.commit(client, f.basket(member, store, lines))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error" and r.json()["errors"]
    assert await f.entry_count(app) == 0


@pytest.mark.parametrize("body_change", [
    {"redeem": {"points": -1}}, {"redeem": {"points": 1, "cash": 2}}, {"member": {}},
    {"member": {"member_id": "m", "phone": "+14155550100"}}, {"currency": "usd"}, {"store_id": "bad store"},
    {"receipt_id": ""}, {"occurred_at": "2026-01-01T10:00:00"}, {"occurred_at": "yesterday"},
    {"occurred_at": "0001-01-01T00:00:00+01:00"}, {"occurred_at": "1900-01-01T00:00:00Z"},
    {"occurred_at": 1795000000}, {"occurred_at": 1795000000.5},  # seconds since 1970, not date-time text
    {"occurred_at": "1795000000"}, {"occurred_at": "-110186"},  # the same as strings of digits
])
async def test_bad_request_bodies_are_422(client, shop, body_change):
    store, member = shop
    body = {"receipt_id": "R-1", **f.basket(member, store), **body_change}
    r = await client.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 422, r.text


async def test_occurred_at_rules(client, shop, make_client):
    store, member = shop
    pos = make_client(await f.create_key(client, "pos", store))
    now = datetime.now(UTC)

    async def at(c, when):
        return await f.commit(c, f.basket(member, store, occurred_at=when.isoformat()))

    assert (await at(pos, now - timedelta(hours=71))).status_code == 201
    r = await at(pos, now - timedelta(hours=73))
    assert r.status_code == 422 and r.json()["code"] == "occurred_at_out_of_range"
    assert (await at(client, now - timedelta(days=400))).status_code == 201  # an admin import
    for c in (pos, client):
        r = await at(c, now + timedelta(minutes=10))
        assert r.status_code == 422 and r.json()["code"] == "occurred_at_out_of_range"
    assert (await at(pos, now + timedelta(minutes=4))).status_code == 201


async def test_a_sale_sent_late_earns_as_at_its_time_and_redeems_as_at_the_commit(client, shop, clock, make_client):
    """A till back online sends a sale of 30 hours ago. What the sale earns is judged at its ``occurred_at``: a
    bonus event that has ended since still doubles it, and its lot ends 12 months after the sale. What it redeems
    is checked at the commit, where single use is decided: a voucher that ended 10 hours ago is refused (409
    ``voucher_expired``, nothing written), and the till sends the sale again without it."""
    store, member = shop
    pos = make_client(await f.create_key(client, "pos", store))
    now = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
    ended = now - timedelta(hours=10)
    clock.freeze(now - timedelta(days=5))
    r = await client.post("/v1/voucher-campaigns", json={"name": "Five off", "kind": "amount_off", "value": 500,
                                                         "valid_until": ended.isoformat()})
    assert r.status_code == 201, r.text
    r = await client.post(f"/v1/voucher-campaigns/{r.json()['id']}/vouchers", json={"member_id": member},
                          headers={"Idempotency-Key": f.new_key()})
    code = r.json()[0]["code"]
    await f.set_program(client, earn={"bonus_events": [{"name": "Weekend", "starts_at": (now - timedelta(days=3))
                                                        .isoformat(), "ends_at": ended.isoformat(), "multiplier": 2}]})
    clock.freeze(now)
    sold_at = now - timedelta(hours=30)
    body = f.basket(member, store, [f.line(unit_price=2000)], occurred_at=sold_at.isoformat())
    r = await f.commit(pos, {**body, "redeem": {"vouchers": [code]}}, receipt_id="offline-1")
    f.assert_problem(r, 409, "voucher_expired")
    assert await f.balance(client, member) == 0
    r = await f.commit(pos, body, receipt_id="offline-1")
    assert r.status_code == 201 and r.json()["earned"]["points"] == 40, r.text  # 20.00 at the event's 2x
    [lot] = (await client.get(f"/v1/members/{member}/points")).json()["expiring"]
    assert datetime.fromisoformat(lot["expires_at"]) == datetime(2027, 12, 9, 6, 0, tzinfo=UTC)  # sold_at + 12 months


async def test_pos_key_is_bound_to_its_store(client, shop, make_client):
    store, member = shop
    other = (await f.create_store(client))["id"]
    pos = make_client(await f.create_key(client, "pos", store))
    pos_other = make_client(await f.create_key(client, "pos", other))
    app_key = make_client(await f.create_key(client, "app"))
    r = await f.commit(pos, f.basket(member, other))
    assert r.status_code == 403
    r = await pos.post("/v1/checkout/quote", json=f.basket(member, other))
    assert r.status_code == 403
    t = (await f.commit(pos, f.basket(member, store))).json()
    assert (await pos.get(f"/v1/checkout/transactions/{t['id']}")).status_code == 200
    assert (await pos_other.get(f"/v1/checkout/transactions/{t['id']}")).status_code == 403
    r = await pos_other.post(f"/v1/checkout/transactions/{t['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 403
    assert (await app_key.post("/v1/checkout/quote", json=f.basket(member, store))).status_code == 403
    assert (await client.get("/v1/checkout/transactions/txn_missing")).status_code == 404


async def test_quote_greets_in_the_members_language_and_nudges_expiring_points(client, clock):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client, name="李雷", locale="zh-CN"))["id"]
    await f.adjust(client, member, 40)
    clock.advance(timedelta(days=350))  # the lot expires 12 months after it was given
    r = await client.post("/v1/checkout/quote", json=f.basket(member, store))
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["greeting"]["locale"] == "zh-CN" and q["greeting"]["occasion"] == "welcome"
    assert q["greeting"]["text"].startswith("李雷，") and "欢迎您" in q["greeting"]["text"]
    assert [n["kind"] for n in q["nudges"]] == ["tier", "points_expiry"]
    assert q["nudges"][0]["text"].startswith("再消费")
    assert q["nudges"][1]["text"].startswith("40 积分") and q["nudges"][1]["points"] == 40


@pytest.mark.parametrize("path", ["/v1/checkout/quote", "/v1/checkout/transactions"])
async def test_the_store_and_the_currency_are_told_before_the_member(client, path):
    """The member is read first (its statement carries the program's versions), but the answers keep their
    order: an unknown store, then a wrong currency, then an unknown member or card."""
    store = (await f.create_store(client))["id"]
    keys = iter(range(10))

    async def answer(**changes) -> tuple[int, str]:
        body = {"store_id": store, "currency": "USD", "member": {"member_id": "mem_nobody"}, "lines": [f.line()],
                **({"receipt_id": "r-order"} if path.endswith("transactions") else {}), **changes}
        r = await client.post(path, json=body, headers={"Idempotency-Key": f"order-{path}-{next(keys)}"})
        return r.status_code, r.json()["code"]

    assert await answer(store_id="no-such-store", currency="EUR") == (404, "store_not_found")
    assert await answer(currency="EUR") == (422, "currency_mismatch")
    assert await answer(currency="EUR", member={"card_number": "1234"}) == (422, "currency_mismatch")
    assert await answer() == (404, "member_not_found")
