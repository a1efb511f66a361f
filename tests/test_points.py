"""Points through HTTP and the CLI: balance, ledger pages, adjustments, expiry sweep, verify."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service import cli
from tests import factories as f
from tests.server import run_cli


async def test_points_balance_and_expiring_lots(client, clock):
    member = (await f.enroll(client))["id"]
    assert (await client.get(f"/v1/members/{member}/points")).json() == {"balance": 0, "expiring": []}
    await f.adjust(client, member, 70)
    clock.advance(timedelta(days=31))
    await f.adjust(client, member, 30)
    body = (await client.get(f"/v1/members/{member}/points")).json()
    assert body["balance"] == 100
    assert [e["amount"] for e in body["expiring"]] == [70, 30]
    assert body["expiring"][0]["expires_at"] < body["expiring"][1]["expires_at"]
    assert (await client.get("/v1/members/mem_nobody/points")).json()["code"] == "member_not_found"


async def test_ledger_pages_newest_first(client):
    member = (await f.enroll(client))["id"]
    for amount in (10, 20, 30, -5):
        await f.adjust(client, member, amount, reason=f"fix {amount}")
    page1 = (await client.get(f"/v1/members/{member}/ledger", params={"limit": 3})).json()
    assert [e["amount"] for e in page1["data"]] == [-5, 30, 20]
    assert page1["data"][0] | {"id": "x", "transaction_id": "x", "created_at": "x"} == {
        "id": "x", "transaction_id": "x", "account": "points", "amount": -5, "kind": "adjust", "created_at": "x",
        "reason": "fix -5"}
    page2 = (await client.get(f"/v1/members/{member}/ledger",
                              params={"limit": 3, "after": page1["next_cursor"]})).json()
    assert [e["amount"] for e in page2["data"]] == [10] and page2["next_cursor"] is None
    # Not a cursor the list gave: words, digits int() refuses or Unicode reads, numbers past 64 bits.
    for after in ("not-a-cursor", "²", "٣", "9" * 19, "-1"):
        bad = await client.get(f"/v1/members/{member}/ledger", params={"after": after})
        assert bad.status_code == 422, (after, bad.text)


async def test_ledger_kinds_are_api_md_s(client):
    """API.md: `kind` says why (`earn`, `burn`, `expire`, `adjust`, `top_up`, `pay`, `refund`, `void`, `return`, …).
    The wallet paying at the till answered `wallet_pay`."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 5000, "payment_ref": "p-1"},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    sale = await f.commit(client, f.basket(member, store, [f.line(unit_price=2000)], redeem={"wallet_amount": 1500}))
    assert sale.status_code == 201, sale.text
    assert (await f.void(client, sale.json()["id"])).status_code == 200
    entries = (await client.get(f"/v1/members/{member}/ledger", params={"limit": 100})).json()["data"]
    wallet = [(e["kind"], e["amount"]) for e in reversed(entries) if e["account"] == "wallet_cash"]
    assert wallet == [("top_up", 5000), ("pay", -1500), ("void", 1500)], entries
    points = [(e["kind"], e["amount"]) for e in reversed(entries) if e["account"] == "points"]
    assert points == [("earn", 20), ("void", -20)], entries


async def test_a_till_reads_only_its_own_stores_entries_of_the_ledger(client, make_client):
    """DESIGN §7: a key never reaches another store's transactions. The purchase history hid store A's sale from
    store B's till, but the ledger handed it every entry of it (when, the points earned, what the wallet paid).
    Entries of no store (an admin's top-up or adjustment, expiry) are the member's dealings with the
    program, not a till's: the app and admin read them."""
    a, b = (await f.create_store(client))["id"], (await f.create_store(client))["id"]
    till_a = make_client(await f.create_key(client, "pos", a))
    till_b = make_client(await f.create_key(client, "pos", b))
    app_backend = make_client(await f.create_key(client, "app"))
    member = (await f.enroll(client))["id"]

    async def top_up(c, amount: int) -> None:
        r = await c.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": amount, "payment_ref": "p-1"},
                         headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text

    async def ledger(c, **params) -> dict:
        r = await c.get(f"/v1/members/{member}/ledger", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    await top_up(client, 5000)  # an admin's: no store
    await f.adjust(client, member, 40, reason="goodwill")
    at_a = await f.commit(client, f.basket(member, a, [f.line(unit_price=4321)], redeem={"wallet_amount": 1234}))
    assert at_a.status_code == 201, at_a.text
    await top_up(till_b, 700)
    at_b = [await f.commit(client, f.basket(member, b, [f.line(unit_price=1000 + i)])) for i in range(3)]
    assert all(r.status_code == 201 for r in at_b)

    everything = (await ledger(client, limit=100))["data"]
    assert (await ledger(app_backend, limit=100))["data"] == everything
    in_order = list(dict.fromkeys(e["transaction_id"] for e in reversed(everything)))
    admin_top_up, adjustment, sale_a, till_top_up, *sales_b = in_order
    assert len(sales_b) == 3

    seen_by_b = (await ledger(till_b, limit=100))["data"]
    assert seen_by_b == [e for e in everything if e["transaction_id"] in {till_top_up, *sales_b}]
    assert sorted(e["kind"] for e in seen_by_b) == ["earn"] * 3 + ["top_up"]
    seen_by_a = (await ledger(till_a, limit=100))["data"]
    assert seen_by_a == [e for e in everything if e["transaction_id"] == sale_a]
    assert sorted((e["kind"], e["amount"]) for e in seen_by_a) == [("earn", 43), ("pay", -1234)]
    assert not {e["transaction_id"] for e in seen_by_a + seen_by_b} & {admin_top_up, adjustment}  # no store's

    pages, after = [], None  # a till's pages hold its own store's entries only, and the cursor walks past the rest
    while True:
        page = await ledger(till_b, limit=1, **({"after": after} if after else {}))
        pages += page["data"]
        after = page["next_cursor"]
        if after is None:
            break
    assert pages == seen_by_b


async def test_adjustments(client, make_client, app):
    member = (await f.enroll(client))["id"]
    t = await f.adjust(client, member, 100, reason="welcome gift")
    assert t["kind"] == "adjustment" and t["reason"] == "welcome gift" and t["balances_after"] == {"points": 100}
    assert sum(e["amount"] for e in t["entries"]) == 0
    t = await f.adjust(client, member, -40, reason="duplicate earn")
    assert t["balances_after"] == {"points": 60}
    url = f"/v1/members/{member}/points/adjustments"

    async def post(c, body, key=None):
        return await c.post(url, json=body, headers={"Idempotency-Key": key or f.new_key()})

    r = await post(client, {"amount": -61, "reason": "too much"})
    assert r.status_code == 409 and r.json()["code"] == "insufficient_points"
    for body in ({"amount": 0, "reason": "x"}, {"amount": 5, "reason": ""}, {"amount": 5, "reason": "x" * 201},
                 {"amount": 5}, {"amount": 10**10, "reason": "x"}, {"amount": 5, "reason": "x", "extra": 1}):
        r = await post(client, body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.post(url, json={"amount": 5, "reason": "x"})).status_code == 400
    pos = make_client(await f.create_key(client, "pos", (await f.create_store(client))["id"]))
    assert (await post(pos, {"amount": 5, "reason": "x"})).status_code == 403
    first = await post(client, {"amount": 7, "reason": "retry"}, key="adj-1")
    again = await post(client, {"amount": 7, "reason": "retry"}, key="adj-1")
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    r = await client.post("/v1/members/mem_nobody/points/adjustments", json={"amount": 5, "reason": "x"},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 404
    assert await f.balance(client, member) == 67
    await f.verify_ledger(app)


async def test_sweep_expires_lots_by_their_expiry(client, clock, app, cli_env, capsys):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    start = clock.now()
    await f.adjust(client, member, 50)  # expires start + 12 months
    clock.advance(timedelta(days=62))
    await f.commit(client, f.basket(member, store, [f.line(unit_price=3000)]))  # 30 points, 2 months later
    await f.commit(client, f.basket(member, store, [f.line(unit_price=2000)], points=20))  # from the first lot
    assert await f.balance(client, member) == 50 + 30 - 20 + 19

    as_of = start + timedelta(days=370)  # the first lot has expired, the later ones not yet
    assert await run_cli("sweep", "--allow-future", "--as-of", as_of.isoformat()) == 0
    assert "expired 30 points from 1 lots of 1 members" in capsys.readouterr().out
    assert await f.balance(client, member) == 49
    assert await run_cli("sweep", "--allow-future", "--as-of", as_of.isoformat()) == 0  # idempotent
    assert "expired 0 points" in capsys.readouterr().out
    assert await f.balance(client, member) == 49
    entries = (await client.get(f"/v1/members/{member}/ledger")).json()["data"]
    assert entries[0]["kind"] == "expire" and entries[0]["amount"] == -30

    assert await run_cli("sweep", "--allow-future", "--as-of", (start + timedelta(days=800)).isoformat()) == 0
    assert await f.balance(client, member) == 0
    assert (await client.get(f"/v1/members/{member}/points")).json()["expiring"] == []
    assert await run_cli("verify") == 0
    assert "every invariant holds" in capsys.readouterr().out
    await f.verify_ledger(app)


async def test_verify_reports_a_broken_invariant(client, app, cli_env, capsys):
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 10)
    async with app.state.db.transaction() as session:  # tamper with a cached balance behind the ledger's back
        await session.execute(text("UPDATE ledger_accounts SET balance = balance + 1 WHERE member_id = :m"),
                              {"m": member})
    assert await run_cli("verify") == 1
    out = capsys.readouterr().out
    assert "balance 11 but its entries sum to 10" in out
    assert "open lots hold 10" in out


async def test_ledger_entries_cannot_be_updated(client, app):
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 10)
    with pytest.raises(DBAPIError, match="append-only"):
        async with app.state.db.transaction() as session:
            await session.execute(text("UPDATE ledger_entries SET amount = 11 WHERE member_id = :m"), {"m": member})


async def test_sweep_rejects_a_bad_as_of(cli_env, capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--as-of", "someday"])
    assert "ISO 8601" in capsys.readouterr().err


async def test_points_spent_after_their_lot_ended_but_before_the_sweep_come_from_that_lot(client, clock, app, cli_env,
                                                                                         capsys):
    """Points stay spendable until the sweep expires them: a burn after a lot's end (no sweep yet) draws from that
    lot first, as the soonest-expiring, and the sweep then expires only what is left of it."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 50)  # lot A: ends in 12 months
    clock.advance(timedelta(days=62))
    await f.adjust(client, member, 30)  # lot B: two months later
    clock.advance(timedelta(days=370 - 62))  # A has ended, the sweep has not run
    assert await f.balance(client, member) == 80
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=2000)], points=20))
    assert r.status_code == 201 and r.json()["balances_after"]["points"] == 80 - 20 + 19, r.text
    body = (await client.get(f"/v1/members/{member}/points")).json()
    assert [e["amount"] for e in body["expiring"]] == [30, 30, 19]  # A's rest (ended), B, the sale's
    assert await run_cli("sweep", "--allow-future", "--as-of", clock.now().isoformat()) == 0
    assert "expired 30 points from 1 lots of 1 members" in capsys.readouterr().out
    assert await f.balance(client, member) == 49
    assert [e["amount"] for e in (await client.get(f"/v1/members/{member}/points")).json()["expiring"]] == [30, 19]
    await f.verify_ledger(app)


async def test_a_void_after_the_sweep_puts_points_back_into_their_ended_lot_and_the_next_sweep_expires_them(
        client, clock, app, cli_env, capsys):
    """A sale burned 40 points of a lot that has since ended and been swept (its last 10 expired). Its void puts
    the 40 back into that very lot (burned points go back to the lots they came from), so they are the member's
    again until the next sweep, which expires them as it expired the rest of the lot: a return after the end
    does not give points a new life. The sale's own points are clawed back; nothing expires twice."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    start = clock.now()
    await f.adjust(client, member, 50)  # lot A: ends start + 12 months
    clock.advance(timedelta(days=62))
    await f.adjust(client, member, 30)  # lot B
    sale = (await f.commit(client, f.basket(member, store, [f.line(unit_price=1000)], points=40))).json()
    assert sale["balances_after"]["points"] == 80 - 40 + 9  # 40 from A; 9 earned on 9.60
    as_of = (start + timedelta(days=370)).isoformat()
    assert await run_cli("sweep", "--allow-future", "--as-of", as_of) == 0
    assert "expired 10 points from 1 lots of 1 members" in capsys.readouterr().out
    assert await f.balance(client, member) == 39

    clock.advance(timedelta(days=370 - 62))
    v = await f.void(client, sale["id"])
    assert v.status_code == 200 and v.json()["balances_after"]["points"] == 39 + 40 - 9, v.text
    assert await run_cli("sweep", "--allow-future", "--as-of", as_of) == 0
    assert "expired 40 points from 1 lots of 1 members" in capsys.readouterr().out
    assert await f.balance(client, member) == 30  # lot B
    assert await run_cli("sweep", "--allow-future", "--as-of", as_of) == 0
    assert "expired 0 points" in capsys.readouterr().out
    entries = (await client.get(f"/v1/members/{member}/ledger", params={"limit": 500})).json()["data"]
    assert sum(e["amount"] for e in entries if e["kind"] == "expire") == -50  # lot A, once in all
    assert await run_cli("verify") == 0
    await f.verify_ledger(app)


async def test_two_sweeps_at_once_expire_each_lot_once(client, clock, app, cli_env, capsys):
    """`loyalty sweep` run twice at the same moment (two cron hosts, a retry over a slow run): each member's lots
    are read again under the member's lock, so what one sweep expired the other finds gone."""
    members = [(await f.enroll(client))["id"] for _ in range(5)]
    for i, member in enumerate(members, start=1):
        await f.adjust(client, member, 10 * i)
    as_of = (clock.now() + timedelta(days=400)).isoformat()
    codes = await asyncio.gather(*(run_cli("sweep", "--allow-future", "--as-of", as_of) for _ in range(2)))
    assert codes == [0, 0]
    out = capsys.readouterr().out
    assert sum(int(n) for n in re.findall(r"expired (\d+) points from", out)) == 150, out
    for i, member in enumerate(members, start=1):
        assert await f.balance(client, member) == 0
        entries = (await client.get(f"/v1/members/{member}/ledger")).json()["data"]
        assert [e["amount"] for e in entries if e["kind"] == "expire"] == [-10 * i]
    assert await run_cli("verify") == 0
    await f.verify_ledger(app)
