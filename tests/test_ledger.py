"""Ledger properties through HTTP: concurrent tills in one process, bounded work per commit, and random
sequences of operations after which every invariant of DESIGN §3 still holds."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from sqlalchemy import text

from service.points import service as points_service
from tests import factories as f


async def test_concurrent_commits_spend_a_balance_once(client, app):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 500)
    answers = await asyncio.gather(*(
        f.commit(client, f.basket(member, store, [f.line(unit_price=10_000)], points=500)) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7
    assert await f.balance(client, member) == 95
    await f.verify_ledger(app)


async def _short_and_long_history(client) -> tuple[str, str, str]:
    """A store, a member with one past sale and a member with 25, both holding 100 points."""
    store = (await f.create_store(client))["id"]
    short, long_ = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    await f.commit(client, f.basket(short, store))
    for _ in range(25):
        await f.commit(client, f.basket(long_, store))
    await f.adjust(client, short, 100)
    await f.adjust(client, long_, 100)
    return store, short, long_


async def test_a_commit_costs_the_same_queries_whatever_the_history(client, app):
    store, short, long_ = await _short_and_long_history(client)
    counts = []
    for member in (short, long_):
        with f.counted_statements(app) as statements:
            r = await f.commit(client, f.basket(member, store, [f.line(unit_price=5000)], points=50))
        assert r.status_code == 201, r.text
        counts.append(len(statements))
    # 6 on PostgreSQL: the member (with the program's versions) and the idempotency key's lock, together
    # (db.guard); the member's accounts, locked; the tier state, locked; the tier with the window's spend, the
    # running figures and the lots the burn draws from, together (db.prefetch); the ledger posting, one statement;
    # the receipt, with the commit's other writes (db.defer) and the idempotency record. SQLite: 22 (no combined
    # statements; 2 BEGINs). benchmarks/profile_path.py commit --show-sql lists them.
    assert counts[0] == counts[1] and counts[0] <= {"postgresql": 6, "sqlite": 22}[app.state.db.dialect], counts


async def test_a_new_members_first_sale_costs_what_a_later_one_does(client, app):
    """Enrolment creates the accounts every sale locks and the tier state (joined to the enrolment's own
    statements), so the first sale finds them instead of creating them under its locks: it cost four statements
    more on PostgreSQL before (each lock missed, created its rows and locked again)."""
    store = (await f.create_store(client))["id"]
    earlier = (await f.enroll(client))["id"]  # a sale first: the process's copies of the store and programmes
    assert (await f.commit(client, f.basket(earlier, store))).status_code == 201
    with f.counted_statements(app) as enrolment:
        member = (await f.enroll(client))["id"]
    counts = []
    for _ in range(2):
        with f.counted_statements(app) as statements:
            r = await f.commit(client, f.basket(member, store, [f.line(unit_price=5000)]))
        assert r.status_code == 201, r.text
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
    # PostgreSQL: the idempotency key's lock, the member's insert (the accounts, the tier state and the event go
    # out with the idempotency record) and that record.
    assert len(enrolment) <= {"postgresql": 3, "sqlite": 8}[app.state.db.dialect], enrolment


async def test_a_member_enrolled_without_accounts_or_tier_state_gets_them_at_the_first_sale(client, app):
    """Members enrolled before enrolment created them (or by an older version) have neither: the sale creates
    them, as it always did."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    async with app.state.db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM tier_states WHERE member_id = :m"), {"m": member})
        gone = await conn.execute(text("DELETE FROM ledger_accounts WHERE member_id = :m"), {"m": member})
    assert gone.rowcount == 3  # points, wallet cash, wallet bonus: nothing posted to them yet
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=5000)]))
    assert r.status_code == 201, r.text
    assert await f.balance(client, member) == 50
    async with app.state.db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM tier_states WHERE member_id = :m"),
                                   {"m": member})).scalar() == 1
    await f.verify_ledger(app)


async def test_a_quote_costs_the_same_queries_whatever_the_history(client, app):
    store, short, long_ = await _short_and_long_history(client)
    counts = []
    for member in (short, long_):
        with f.counted_statements(app) as statements:
            r = await client.post("/v1/checkout/quote",
                                  json=f.basket(member, store, [f.line(unit_price=5000)], points=50))
        assert r.status_code == 200, r.text
        counts.append(len(statements))
    # 2 on PostgreSQL: the member (with the program's versions), then the tier standing, the balances with the
    # next expiries, the running figures, punch card rewards and vouchers in one statement (db.prefetch). SQLite:
    # each of those 6 on its own, and its BEGIN.
    assert counts[0] == counts[1] and counts[0] <= {"postgresql": 2, "sqlite": 7}[app.state.db.dialect], counts


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_operations_keep_every_invariant(client, app, clock, seed):
    rng = random.Random(seed)
    store = (await f.create_store(client))["id"]
    members = [(await f.enroll(client))["id"] for _ in range(2)]
    committed: list[dict] = []
    for _ in range(25):
        member = rng.choice(members)
        op = rng.choice(["earn", "earn", "burn", "void", "return", "adjust", "time", "sweep"])
        if op == "earn":
            lines = [f.line(str(i), quantity=rng.randint(1, 3), unit_price=rng.randint(0, 5000))
                     for i in range(rng.randint(1, 3))]
            r = await f.commit(client, f.basket(member, store, lines))
            assert r.status_code == 201, r.text
            committed.append(r.json())
        elif op == "burn":
            balance = await f.balance(client, member)
            lines = [f.line(str(i), unit_price=rng.randint(1, 5000)) for i in range(rng.randint(1, 3))]
            points = rng.randint(0, max(balance, 0))
            r = await f.commit(client, f.basket(member, store, lines, points=points))
            assert r.status_code in (201, 409, 422), r.text
            if r.status_code == 201:
                committed.append(r.json())
        elif op == "void" and committed:
            t = rng.choice(committed)
            r = await client.post(f"/v1/checkout/transactions/{t['id']}/void",
                                  headers={"Idempotency-Key": f.new_key()})
            assert r.status_code in (200, 409), r.text
        elif op == "return" and committed:
            t = rng.choice(committed)
            line = rng.choice(t["lines"])
            r = await client.post(f"/v1/checkout/transactions/{t['id']}/returns",
                                  json={"lines": [{"line_id": line["line_id"], "quantity": 1}]},
                                  headers={"Idempotency-Key": f.new_key()})
            assert r.status_code in (201, 409, 422), r.text
        elif op == "adjust":
            balance = await f.balance(client, member)
            amount = rng.randint(-max(balance, 0), 300) or 1
            await f.adjust(client, member, amount)
        elif op == "time":
            clock.advance(timedelta(days=rng.randint(1, 200)))
        elif op == "sweep":
            async with app.state.db.transaction() as session:
                await points_service.sweep_batch(session, clock.now(), clock.now())
        await f.verify_ledger(app)
    for member in members:
        entries = (await client.get(f"/v1/members/{member}/ledger", params={"limit": 500})).json()["data"]
        assert sum(e["amount"] for e in entries) == await f.balance(client, member)


async def test_post_refuses_a_movement_against_a_non_program_account(client, app, clock):
    from service.ledger import service as ledger
    from service.ledger.errors import InvalidPosting
    from service.ledger.rules import Movement

    member = (await f.enroll(client))["id"]
    with pytest.raises(InvalidPosting):
        async with app.state.db.transaction() as session:
            accounts = await ledger.lock_accounts(session, member, ["points"], clock.now())
            bad = Movement("points", "points", 10, "wallet_cash", "adjust")
            await ledger.post(session, ledger.Posting("adjustment", member, clock.now(), (bad,)), accounts)
    assert await f.balance(client, member) == 0
    await f.verify_ledger(app)


async def test_a_burn_across_five_lots_updates_each_and_a_void_restores_them(client, app, clock):
    """A posting names the lots it changes one parameter each, in statements sized by powers of two: five lots
    go in a statement of eight, the three spare keys matching nothing."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    for amount in (10, 20, 30, 40, 50):  # five lots, each expiring a day after the one before
        await f.adjust(client, member, amount)
        clock.advance(timedelta(days=1))
    sale = await f.commit(client, f.basket(member, store, [f.line(unit_price=100_000)], points=145))
    assert sale.status_code == 201, sale.text
    points = (await client.get(f"/v1/members/{member}/points")).json()
    assert points["expiring"][0]["amount"] == 5  # the soonest four lots are spent, 45 of the fifth
    assert sum(lot["amount"] for lot in points["expiring"]) == points["balance"]
    await f.verify_ledger(app)
    voided = await f.void(client, sale.json()["id"])
    assert voided.status_code == 200, voided.text
    assert await f.balance(client, member) == 150
    assert [lot["amount"] for lot in (await client.get(f"/v1/members/{member}/points")).json()["expiring"]] == \
        [10, 20, 30, 40, 50]
    await f.verify_ledger(app)
