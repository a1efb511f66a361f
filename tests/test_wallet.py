"""The member wallet through HTTP: top-ups with bonus rules, paying at the till, void and returns, cash-out, the
liability report (runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import text

from tests import factories as f


@pytest.fixture
async def shop(client):
    store = await f.create_store(client)
    member = await f.enroll(client)
    return store["id"], member["id"]


async def top_up(client, member: str, amount: int, *, key: str | None = None, ref: str = "pay-1"):
    return await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": amount, "payment_ref": ref},
                             headers={"Idempotency-Key": key or f.new_key()})


async def wallet(client, member: str) -> dict:
    r = await client.get(f"/v1/members/{member}/wallet")
    assert r.status_code == 200, r.text
    return r.json()


def pay(member: str, store: str, lines: list[dict], amount: int) -> dict:
    return f.basket(member, store, lines, redeem={"wallet_amount": amount})


async def test_top_ups_apply_the_largest_bonus_rule_reached_and_never_earn_points(client, app, make_client, shop):
    store, member = shop
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 5000, "bonus": 500},
                                                       {"min_amount": 1000, "bonus": 50}])
    r = await top_up(client, member, 999)
    assert r.status_code == 201, r.text
    assert r.json() == {"cash": 999, "bonus": 0, "total": 999, "bonus_granted": 0}
    r = await top_up(client, member, 1000)
    assert r.json() == {"cash": 1999, "bonus": 50, "total": 2049, "bonus_granted": 50}
    till = make_client(await f.create_key(client, "pos", store))
    key = f.new_key()
    r = await top_up(till, member, 6000, key=key)
    assert r.status_code == 201, r.text
    assert r.json()["bonus_granted"] == 500
    replay = await top_up(till, member, 6000, key=key)  # the same request again: nothing more is credited
    assert replay.status_code == 201 and replay.json() == r.json()
    assert await wallet(client, member) == {"cash": 7999, "bonus": 550, "total": 8549, "currency": "USD"}
    assert await f.balance(client, member) == 0
    app_key = make_client(await f.create_key(client, "app"))
    assert (await top_up(app_key, member, 100)).status_code == 403
    assert (await top_up(client, member, 0)).status_code == 422
    assert (await top_up(client, "mem_nobody", 100)).status_code == 404
    await f.verify_ledger(app)


async def test_paying_splits_cash_and_bonus_in_proportion_with_exact_rounding(client, app, shop):
    store, member = shop
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 300, "bonus": 100}])
    await top_up(client, member, 300)  # cash 300, bonus 100: 3:1
    r = await f.commit(client, pay(member, store, [f.line(unit_price=1000)], 1))
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["totals"] == {"subtotal": 1000, "discount": 0, "net": 1000, "wallet": 1, "gift_cards": 0,
                           "payable": 999}
    assert {"kind": "wallet", "id": None, "line_id": None, "amount": 1, "points": None} in t["applied"]
    assert t["earned"]["points"] == 10  # wallet-paid spend earns too
    assert t["balances_after"]["wallet"] == 399
    assert await wallet(client, member) == {"cash": 299, "bonus": 100, "total": 399, "currency": "USD"}
    r = await f.commit(client, pay(member, store, [f.line(unit_price=1000)], 3))  # 2.2425 + 0.7575 -> 2 + 1
    assert (await wallet(client, member))["cash"] == 297 and (await wallet(client, member))["bonus"] == 99

    q = await client.post("/v1/checkout/quote", json=pay(member, store, [f.line(unit_price=500)], 396))
    assert q.status_code == 200, q.text
    assert q.json()["totals"]["payable"] == 104 and q.json()["balances"]["wallet"] == 396
    assert q.json()["earn"] == {"points": 5, "bonus_points": 0, "stamps": [], "qualifying_spend": 500}
    r = await f.commit(client, pay(member, store, [f.line(unit_price=500)], 396))  # everything
    assert r.status_code == 201, r.text
    assert r.json()["earned"]["points"] == 5 and r.json()["totals"]["payable"] == 104
    assert await wallet(client, member) == {"cash": 0, "bonus": 0, "total": 0, "currency": "USD"}
    await f.verify_ledger(app)


async def test_overdraft_and_paying_more_than_payable_are_refused_and_write_nothing(client, app, shop):
    store, member = shop
    await top_up(client, member, 500)
    before = await f.entry_count(app)
    r = await f.commit(client, pay(member, store, [f.line(unit_price=1000)], 501))
    assert r.status_code == 409 and r.json()["code"] == "insufficient_funds", r.text
    r = await f.commit(client, pay(member, store, [f.line(unit_price=400)], 401))
    assert r.status_code == 422 and r.json()["code"] == "wallet_exceeds_payable", r.text
    r = await client.post("/v1/checkout/quote", json=pay(member, store, [f.line(unit_price=1000)], 501))
    assert r.status_code == 409 and r.json()["code"] == "insufficient_funds"
    assert await f.entry_count(app) == before
    assert (await wallet(client, member))["total"] == 500


async def test_partial_returns_and_void_give_back_exact_parts(client, app, shop):
    store, member = shop
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 300, "bonus": 100}])
    await top_up(client, member, 300)
    lines = [f.line("a", quantity=3, unit_price=100), f.line("b", unit_price=100)]
    r = await f.commit(client, pay(member, store, lines, 333))  # 249.75 + 83.25 -> cash 250, bonus 83
    assert r.status_code == 201, r.text
    txn = r.json()["id"]
    assert await wallet(client, member) == {"cash": 50, "bonus": 17, "total": 67, "currency": "USD"}

    r = await f.return_lines(client, txn, {"a": 1})
    assert r.status_code == 201, r.text
    assert r.json()["reversed"]["wallet"] == 83  # 333 * 100 / 400 = 83.25; split 62.34 + 20.66 -> 62 + 21
    assert await wallet(client, member) == {"cash": 112, "bonus": 38, "total": 150, "currency": "USD"}
    r = await f.return_lines(client, txn, {"a": 1})
    assert r.json()["reversed"]["wallet"] == 84  # 166.5 -> 167 in all
    r = await f.void(client, txn)
    assert r.status_code == 200, r.text
    assert r.json()["balances_after"]["wallet"] == 400
    assert await wallet(client, member) == {"cash": 300, "bonus": 100, "total": 400, "currency": "USD"}
    await f.verify_ledger(app)


async def test_full_return_gives_back_everything_the_wallet_paid(client, app, shop):
    store, member = shop
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 100, "bonus": 7}])
    await top_up(client, member, 100)
    lines = [f.line("a", quantity=3, unit_price=33), f.line("b", unit_price=1)]
    r = await f.commit(client, pay(member, store, lines, 97))
    txn = r.json()["id"]
    for line_id, qty in (("a", 1), ("a", 1), ("b", 1), ("a", 1)):
        r = await f.return_lines(client, txn, {line_id: qty})
        assert r.status_code == 201, r.text
    assert await wallet(client, member) == {"cash": 100, "bonus": 7, "total": 107, "currency": "USD"}
    await f.verify_ledger(app)


async def test_cash_out_pays_back_cash_and_forfeits_bonus(client, app, make_client, shop):
    store, member = shop
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 1000, "bonus": 100}])
    await top_up(client, member, 1000)
    till = make_client(await f.create_key(client, "pos", store))
    r = await till.post(f"/v1/members/{member}/wallet/cash-out", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 403
    r = await client.post(f"/v1/members/{member}/wallet/cash-out", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    assert r.json() == {"cash_paid": 1000, "bonus_forfeited": 100, "cash": 0, "bonus": 0, "total": 0}
    assert (await wallet(client, member))["total"] == 0
    entries = (await client.get(f"/v1/members/{member}/ledger")).json()["data"]
    assert {e["kind"] for e in entries} >= {"cash_out", "forfeit"}
    [event] = (await client.get("/v1/events", params={"types": "wallet.cashed_out"})).json()["data"]
    cash_out = next(e for e in entries if e["kind"] == "cash_out")
    assert event["data"] == {"member_id": member, "cash_paid": 1000, "bonus_forfeited": 100,
                             "ledger_transaction_id": cash_out["transaction_id"],
                             "wallet": {"cash": 0, "bonus": 0, "total": 0}}
    await f.verify_ledger(app)


async def test_liability_report_equals_the_members_balances(client, app, shop):
    store, member = shop
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 100, "bonus": 10}])
    rng = random.Random(7)
    members = [member] + [(await f.enroll(client))["id"] for _ in range(2)]
    for m in members:
        await top_up(client, m, rng.randint(100, 900))
        await f.adjust(client, m, rng.randint(1, 300))
        await f.commit(client, pay(m, store, [f.line(unit_price=1000)], rng.randint(0, 100)))
    r = await client.get("/v1/reports/liability")
    assert r.status_code == 200, r.text
    report = r.json()
    wallets = [await wallet(client, m) for m in members]
    points = [await f.balance(client, m) for m in members]
    program = (await client.get("/v1/program")).json()
    assert report == {"points_outstanding": sum(points), "points_value": sum(points) * program["point_value"],
                      "wallet_cash": sum(w["cash"] for w in wallets), "wallet_bonus": sum(w["bonus"] for w in wallets),
                      "gift_cards": 0, "gift_cards_count": 0}
    till = (await f.create_key(client, "pos", store))
    assert (await client.get("/v1/reports/liability", headers={"Authorization": f"Bearer {till}"})).status_code == 403
    await f.verify_ledger(app)


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_top_ups_payments_voids_and_returns_keep_the_ledger_whole(client, app, shop, seed):
    store, member = shop
    await f.set_program(client, wallet_top_up_bonuses=[{"min_amount": 200, "bonus": 37}])
    rng = random.Random(seed)
    txns: list[str] = []
    for _ in range(14):
        op = rng.choice(["top_up", "pay", "pay", "void", "return"])
        held = (await wallet(client, member))["total"]
        if op == "top_up":
            assert (await top_up(client, member, rng.randint(1, 500))).status_code == 201
        elif op == "pay":
            lines = [f.line("a", quantity=rng.randint(1, 3), unit_price=rng.randint(1, 300)),
                     f.line("b", unit_price=rng.randint(1, 300))]
            net = sum(ln["quantity"] * ln["unit_price"] for ln in lines)
            amount = rng.randint(0, min(net, held + 5))
            r = await f.commit(client, pay(member, store, lines, amount))
            assert r.status_code == (201 if amount <= held else 409), r.text
            if r.status_code == 201:
                txns.append(r.json()["id"])
        elif txns:
            txn = rng.choice(txns)
            if op == "void":
                r = await f.void(client, txn)
            else:
                r = await f.return_lines(client, txn, {"b": 1})
            # 409: already voided or returned; 422: that line was already returned
            assert r.status_code in (200, 201, 409, 422), r.text
            if r.status_code == 422:
                assert r.json()["code"] == "return_exceeds_purchase"
        w = await wallet(client, member)
        assert w["cash"] >= 0 and w["bonus"] >= 0
    await f.verify_ledger(app)


async def test_an_erased_member_takes_no_new_value_but_can_be_paid_back(client, app, shop):
    _, member = shop
    await top_up(client, member, 700)
    await f.adjust(client, member, 40)
    campaign = (await client.post("/v1/voucher-campaigns", json={"name": "Five off", "kind": "amount_off",
                                                                 "value": 500})).json()
    assert (await client.delete(f"/v1/members/{member}")).status_code == 204

    f.assert_problem(await top_up(client, member, 100), 409, "member_erased")
    r = await client.post(f"/v1/members/{member}/points/adjustments", json={"amount": 10, "reason": "goodwill"},
                          headers={"Idempotency-Key": f.new_key()})
    f.assert_problem(r, 409, "member_erased")
    r = await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"member_id": member},
                          headers={"Idempotency-Key": f.new_key()})
    f.assert_problem(r, 409, "member_erased")
    assert await wallet(client, member) == {"cash": 700, "bonus": 0, "total": 700, "currency": "USD"}

    # What they hold can still leave: the points written off, the wallet's cash paid back.
    r = await client.post(f"/v1/members/{member}/points/adjustments", json={"amount": -40, "reason": "erased"},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    assert await f.balance(client, member) == 0
    r = await client.post(f"/v1/members/{member}/wallet/cash-out", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    assert r.json()["cash_paid"] == 700
    await f.verify_ledger(app)


@pytest.mark.postgres_only
@pytest.mark.parametrize("operation", ["top-up", "adjustment", "voucher"])
async def test_value_waits_for_an_erasure_in_progress_and_is_then_refused(client, app, shop, operation):
    """An erasure holds the member's row while it commits; a top-up, points added or a voucher issued meanwhile
    waits for it and is refused, instead of landing on the member it erases."""
    _, member = shop
    campaign = (await client.post("/v1/voucher-campaigns", json={"name": "Five off", "kind": "amount_off",
                                                                 "value": 500})).json()
    headers = {"Idempotency-Key": f.new_key()}
    request = {
        "top-up": lambda: top_up(client, member, 100),
        "adjustment": lambda: client.post(f"/v1/members/{member}/points/adjustments", headers=headers,
                                          json={"amount": 10, "reason": "goodwill"}),
        "voucher": lambda: client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", headers=headers,
                                       json={"member_id": member}),
    }[operation]
    async with app.state.db.engine.connect() as erasure:
        await erasure.execute(text("UPDATE members SET status = 'erased', erased_at = now() WHERE id = :m"),
                              {"m": member})
        pending = asyncio.create_task(request())
        await asyncio.sleep(0.5)
        assert not pending.done(), (await pending).text  # it waits for the erasure's row
        await erasure.commit()
    f.assert_problem(await pending, 409, "member_erased")
    assert (await wallet(client, member))["cash"] == 0 and await f.balance(client, member) == 0
    assert (await client.get(f"/v1/members/{member}/vouchers")).json()["data"] == []


async def test_a_receipt_read_again_shows_the_wallet_the_sale_left(client, shop):
    store, member = shop
    await top_up(client, member, 1000)
    sale = (await f.commit(client, pay(member, store, [f.line(unit_price=500)], 300))).json()
    assert sale["balances_after"]["wallet"] == 700
    await top_up(client, member, 500)
    unpaid = (await f.commit(client, f.basket(member, store))).json()
    assert unpaid["balances_after"]["wallet"] == 1200
    await top_up(client, member, 100)
    for txn, wallet_after in ((sale, 700), (unpaid, 1200)):
        again = (await client.get(f"/v1/checkout/transactions/{txn['id']}")).json()
        assert again["balances_after"] == txn["balances_after"] == {"points": txn["balances_after"]["points"],
                                                                    "wallet": wallet_after}
    voided = (await f.void(client, sale["id"])).json()
    assert voided["balances_after"]["wallet"] == 1600  # a void answers what it leaves: 1300 and the 300 back
    assert (await client.get(f"/v1/checkout/transactions/{sale['id']}")).json()["balances_after"]["wallet"] == 700
