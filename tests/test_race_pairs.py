"""Different operations on one member's balances at the same moment, on PostgreSQL: a return and the expiry sweep,
a return and a sale using the voucher it withdraws (held in a chosen order: a lock taken here, as the other's
transaction would hold it), and, racing freely through two server processes, a void and returns of one sale, an
adjustment and a sale burning the same points, a top-up and a wallet payment, a gift card's refund and its next
spend, an erasure and a sale, a punch-card reward used while the sale that earned it is voided. Whatever order the
database takes them in, every balance ends where one of the orders leaves it, no request answers a 500, and
``loyalty verify`` stays green."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from service.points import service as points_service
from service.punchcards import service as punch_service
from service.vouchers import service as voucher_service
from tests import factories as f
from tests.conftest import ADMIN_KEY
from tests.server import run_cli
from tests.test_giftcards import tender

pytestmark = pytest.mark.postgres_only


def admin(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60,
                             limits=httpx.Limits(max_connections=40))


async def waiting_on_locks(app, n: int, *, unless: asyncio.Task | None = None) -> None:
    """Returns once ``n`` statements of the test database wait on a lock (or ``unless`` is done)."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock'")
    async with asyncio.timeout(10):
        while unless is None or not unless.done():
            async with app.state.db.engine.connect() as probe:
                if (await probe.execute(query)).scalar_one() >= n:
                    return
            await asyncio.sleep(0.02)


async def mutual_waits(app) -> set[frozenset[int]]:
    """Pairs of statements of the test database each waiting on a lock the other holds: a deadlock, caught in the
    second before PostgreSQL breaks it (``deadlock_timeout``)."""
    query = text("SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock'")
    async with app.state.db.engine.connect() as probe:
        blocked = {pid: set(by) for pid, by in (await probe.execute(query)).all()}
    return {frozenset((a, b)) for a, by in blocked.items() for b in by if a in blocked.get(b, ())}


async def cycles_until_done(app, *tasks: asyncio.Task) -> set[frozenset[int]]:
    """Every deadlock (:func:`mutual_waits`) seen while ``tasks`` run, until they are all done."""
    cycles: set[frozenset[int]] = set()
    while not all(task.done() for task in tasks):
        cycles |= await mutual_waits(app)
        await asyncio.sleep(0.02)
    return cycles


async def wallet(c: httpx.AsyncClient, member: str) -> int:
    r = await c.get(f"/v1/members/{member}/wallet")
    assert r.status_code == 200, r.text
    return r.json()["total"]


async def card_balance(c: httpx.AsyncClient, card: dict) -> int:
    r = await c.get(f"/v1/gift-cards/{card['code']}", headers={"X-Gift-Card-Pin": card["pin"]})
    assert r.status_code == 200, r.text
    return r.json()["balance"]


async def top_up(c: httpx.AsyncClient, member: str, amount: int) -> httpx.Response:
    return await c.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": amount, "payment_ref": "race"},
                        headers={"Idempotency-Key": f.new_key()})


def codes(answers: list[httpx.Response]) -> list[str]:
    return [a.json().get("code", "") if a.status_code >= 400 else str(a.status_code) for a in answers]


async def test_a_return_waiting_on_the_expiry_sweep_claws_back_nothing_the_sweep_took(client, app):
    """The sweep expires a sale's 100 points while the sale's return waits for the member's accounts (the sweep's
    batch holds them). The return must then claw back nothing: the member lost those points once, to expiry. It
    read what the sweep had expired before taking that lock (nothing yet) and clawed back all 100 again, leaving
    the member at -100."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    sale = (await f.commit(client, f.basket(member, store, [f.line(quantity=2, unit_price=5000)]))).json()
    assert sale["earned"]["points"] == 100
    now = datetime.now(UTC)
    async with app.state.db.transaction() as sweep:  # `loyalty sweep` a year and more later, not committed yet
        expired = await points_service.sweep_batch(sweep, now + timedelta(days=400), now)
        assert (expired.members, expired.points) == (1, 100)
        returning = asyncio.create_task(f.return_lines(client, sale["id"], {"1": 2}))
        await waiting_on_locks(app, 1)
    r = await returning
    assert r.status_code == 201, r.text
    assert r.json()["reversed"]["points"] == 0
    assert await f.balance(client, member) == 0
    await f.verify_ledger(app)


async def test_the_expiry_sweep_never_waits_for_a_member_another_transaction_holds(client, app):
    """The sweep expires many members' points in one transaction, locking each member's accounts in id order and
    holding them. A transaction that locks two members' accounts the other way round (a referred member's, then
    the referrer's, as a void of the member's first sale does) waited for the sweep while the sweep waited for
    it, until PostgreSQL broke the cycle a second later. The sweep now leaves a member whose accounts are held
    to its next batch."""
    store = (await f.create_store(client))["id"]
    first, second = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    async with app.state.db.engine.connect() as conn:  # in the sweep's order (the database's, by member id)
        if not (await conn.execute(text("SELECT :a < :b"), {"a": first, "b": second})).scalar_one():
            first, second = second, first
    for member in (first, second):
        assert (await f.commit(client, f.basket(member, store, [f.line(unit_price=1000)]))).status_code == 201
    now = datetime.now(UTC)

    async def sweep():
        async with app.state.db.transaction() as session:  # `loyalty sweep` a year and more later
            return await points_service.sweep_batch(session, now + timedelta(days=400), now)

    lock = text("SELECT id FROM ledger_accounts WHERE member_id = :m FOR UPDATE")
    async with app.state.db.engine.connect() as other:  # holds the second member's accounts, then wants the first's
        await other.execute(lock, {"m": second})
        sweeping = asyncio.create_task(sweep())
        await waiting_on_locks(app, 1, unless=sweeping)  # the sweep is done, or waits for the second member
        wanting = asyncio.create_task(other.execute(lock, {"m": first}))
        cycles = await cycles_until_done(app, wanting)
        await other.rollback()
    assert not cycles, "the sweep and the other transaction waited on each other"
    swept = await sweeping
    assert (swept.members, swept.points, swept.busy) == (1, 10, 1)  # the first member's; the second left for later
    later = await sweep()
    assert (later.members, later.points, later.busy) == (1, 10, 0)
    assert await f.balance(client, first) == 0 and await f.balance(client, second) == 0
    await f.verify_ledger(app)


async def test_voiding_a_referred_members_first_sale_and_the_referrers_sale_do_not_deadlock(client, app):
    """Both sales earned a voucher of one spend-threshold campaign. The void withdraws the friend's (giving its
    place back locks the campaign), then takes the referral back from the referrer; the referrer's own sale locks
    the referrer's accounts, then the campaign to issue from it. With the void first to the campaign, each
    waited for the other. The void now locks the referrer's accounts right after the friend's."""
    r = await client.post("/v1/voucher-campaigns", json={
        "name": "Spend 10, get 1", "kind": "amount_off", "value": 100, "stackable": True,
        "auto_issue": {"spend_threshold": 1000}})
    assert r.status_code == 201, r.text
    store = (await f.create_store(client))["id"]
    referrer = await f.enroll(client)
    assert (await f.commit(client, f.basket(referrer["id"], store, [f.line(unit_price=500)]))).status_code == 201
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    first = (await f.commit(client, f.basket(friend, store, [f.line(unit_price=2500)]))).json()
    assert first["earned"]["bonus_points"] == 500 and len(first["earned"]["vouchers_issued"]) == 1, first
    assert await f.balance(client, referrer["id"]) == 5 + 500

    # The referrer's sale is held between its two locks: after the referrer's accounts, at the referrer's tier.
    async with f.row_held(app, "SELECT member_id FROM tier_states WHERE member_id = :m FOR UPDATE",
                          m=referrer["id"]) as (release, waiting):
        sale = asyncio.create_task(f.commit(client, f.basket(referrer["id"], store, [f.line(unit_price=1500)])))
        await waiting(1)
        voiding = asyncio.create_task(f.void(client, first["id"]))
        await waiting(2)  # the void waits for the referrer's accounts
        await release()
        cycles = await cycles_until_done(app, sale, voiding)
    assert not cycles, "the void and the referrer's sale waited on each other"
    r = await sale
    assert r.status_code == 201 and len(r.json()["earned"]["vouchers_issued"]) == 1, r.text
    r = await voiding
    assert r.status_code == 200, r.text
    assert await f.balance(client, referrer["id"]) == 5 + 15 and await f.balance(client, friend) == 0
    await f.verify_ledger(app)


async def test_a_referred_members_first_sale_and_the_referrers_sale_on_one_gift_card_do_not_deadlock(client, app):
    """Both pay with one gift card. The friend's first qualifying sale locked the friend's accounts, the card's,
    and only then the referrer's, to credit the referral; the referrer's sale locks the referrer's accounts, then
    the card's. The sale now locks the referrer's accounts right after the friend's (referrals.pending)."""
    store = (await f.create_store(client))["id"]
    referrer = await f.enroll(client)
    assert (await f.commit(client, f.basket(referrer["id"], store, [f.line(unit_price=500)]))).status_code == 201
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    r = await client.post("/v1/gift-cards", json={"amount": 10_000}, headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    [card] = r.json()

    def paid_by_card(member: str, amount: int) -> dict:
        return f.basket(member, store, [f.line(unit_price=amount)], redeem={"gift_cards": [tender(card, 1000)]})

    # The referrer's sale is held between its two locks: after the referrer's accounts, at the referrer's tier.
    async with f.row_held(app, "SELECT member_id FROM tier_states WHERE member_id = :m FOR UPDATE",
                          m=referrer["id"]) as (release, waiting):
        sale = asyncio.create_task(f.commit(client, paid_by_card(referrer["id"], 1500)))
        await waiting(1)
        first = asyncio.create_task(f.commit(client, paid_by_card(friend, 2500)))
        await waiting(2)  # the friend's sale waits for the referrer's accounts
        await release()
        cycles = await cycles_until_done(app, sale, first)
    assert not cycles, "the friend's sale and the referrer's sale waited on each other"
    r = await first
    assert r.status_code == 201 and r.json()["earned"]["bonus_points"] == 500, r.text
    assert (await sale).status_code == 201
    assert await f.balance(client, referrer["id"]) == 5 + 15 + 500
    assert await card_balance(client, card) == 8_000
    await f.verify_ledger(app)


async def test_voiding_a_sale_and_a_sale_redeeming_a_code_of_its_campaign_on_one_gift_card_do_not_deadlock(
        client, app):
    """A threshold campaign that also has bearer codes, limited per member. The first sale, paid with a gift card,
    earned one of its vouchers; the void gives that place back (locking the campaign) after locking the card. A
    second member's sale names one of the campaign's bearer codes (locking the campaign, to count what the member
    holds) and pays with the same card: it locked the card only after the campaign, so each waited for the other.
    The sale now locks the cards before any voucher or campaign."""
    r = await client.post("/v1/voucher-campaigns", json={
        "name": "Spend 10, get 1", "kind": "amount_off", "value": 100, "stackable": True, "per_member_limit": 3,
        "auto_issue": {"spend_threshold": 1000}})
    assert r.status_code == 201, r.text
    campaign = r.json()["id"]
    store = (await f.create_store(client))["id"]
    r = await client.post("/v1/gift-cards", json={"amount": 10_000}, headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    [card] = r.json()
    first_member, second_member = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    first = (await f.commit(client, f.basket(first_member, store, [f.line(unit_price=2500)],
                                              redeem={"gift_cards": [tender(card, 1000)]}))).json()
    assert len(first["earned"]["vouchers_issued"]) == 1, first
    r = await client.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"count": 1},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    [bearer] = r.json()
    body = f.basket(second_member, store, [f.line(unit_price=2000)],
                    redeem={"vouchers": [bearer["code"]], "gift_cards": [tender(card, 1000)]})

    # The campaign is held so that both wait for it: the sale first, then the void.
    async with f.row_held(app, "SELECT id FROM voucher_campaigns WHERE id = :c FOR UPDATE", c=campaign) as (
            release, waiting):
        sale = asyncio.create_task(f.commit(client, body))
        await waiting(1)
        voiding = asyncio.create_task(f.void(client, first["id"]))
        await waiting(2)
        await release()
        cycles = await cycles_until_done(app, sale, voiding)
    assert not cycles, "the void and the sale waited on each other"
    r = await sale
    assert r.status_code == 201, r.text
    assert r.json()["totals"]["discount"] == 100 and len(r.json()["earned"]["vouchers_issued"]) == 1, r.text
    r = await voiding
    assert r.status_code == 200, r.text
    assert await card_balance(client, card) == 9_000
    await f.verify_ledger(app)


async def test_the_voucher_and_reward_sweeps_never_wait_for_a_till(client, app):
    """The sweeps expire vouchers and punch card rewards in one statement each. They waited for any that a till
    held, and a till locking two of them in its order against the sweep's could deadlock with it. A voucher or
    reward another transaction holds is now left to the next sweep."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    r = await client.post("/v1/voucher-campaigns", json={"name": "Ten off", "kind": "amount_off", "value": 1000,
                                                          "valid_days": 30})
    assert r.status_code == 201, r.text
    campaign = r.json()["id"]
    vouchers = []
    for _ in range(2):
        r = await client.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"member_id": member},
                              headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text
        vouchers += r.json()
    r = await client.post("/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 1, "reward": {},
        "reward_valid_days": 30})
    assert r.status_code == 201, r.text
    sale = await f.commit(client, f.basket(member, store, [f.line("1", "LATTE", "coffee", 2, 400)]))
    assert sale.status_code == 201, sale.text
    rewards = sale.json()["earned"]["rewards_issued"]
    assert len(rewards) == 2, sale.text
    later = datetime.now(UTC) + timedelta(days=400)

    async def sweep(expire) -> int:
        async with asyncio.timeout(5), app.state.db.transaction() as session:
            return await expire(session, later, datetime.now(UTC))

    for table, first, expire in (("vouchers", vouchers[0], voucher_service.expire_vouchers),
                                 ("punch_rewards", rewards[0], punch_service.expire_rewards)):
        async with f.row_held(app, f"SELECT id FROM {table} WHERE id = :i FOR UPDATE", i=first["id"]):
            assert await sweep(expire) == 1, table  # the other one; before, the sweep waited here
        assert await sweep(expire) == 1, table  # the one held, at the next sweep
        assert await sweep(expire) == 0, table
    r = await client.get(f"/v1/members/{member}/vouchers")
    assert [v["status"] for v in r.json()["data"]] == ["expired", "expired"], r.text


async def test_loyalty_sweep_comes_back_for_a_member_a_till_held(client, app, cli_env, capsys):
    """A member whose accounts a sale holds is left out of the sweep's batch; the sweep comes back for them."""
    store = (await f.create_store(client))["id"]
    held, other = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    for member in (held, other):
        assert (await f.commit(client, f.basket(member, store, [f.line(unit_price=1000)]))).status_code == 201
    as_of = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    async with f.row_held(app, "SELECT id FROM ledger_accounts WHERE member_id = :m FOR UPDATE", m=held) as (
            release, _):
        sweeping = asyncio.create_task(run_cli("sweep", "--allow-future", "--as-of", as_of))
        await asyncio.sleep(1)
        await release()
    assert await sweeping == 0
    assert "expired 20 points from 2 lots of 2 members" in capsys.readouterr().out
    assert await f.balance(client, held) == 0 and await f.balance(client, other) == 0
    await f.verify_ledger(app)


async def test_a_return_withdrawing_a_voucher_and_a_sale_redeeming_it_do_not_deadlock(client, app):
    """A sale earned a threshold voucher; a partial return leaves its spend below the threshold and withdraws the
    voucher while the member's next sale redeems it. A return that moves no balance (this program earns no
    points) took no lock on the member's accounts: it locked the voucher, then the member's tier, while the sale,
    holding the member's accounts and tier, waited for the voucher. PostgreSQL broke that cycle after a second
    (``deadlock_timeout``) and one of them ran again."""
    await f.set_program(client, earn={"base_rate_per_major_unit": 0})
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    r = await client.post("/v1/voucher-campaigns", json={
        "name": "Spend 10, get 1", "kind": "amount_off", "value": 100, "stackable": True,
        "auto_issue": {"spend_threshold": 1000}})
    assert r.status_code == 201, r.text
    lines = [f.line("1", unit_price=1000), f.line("2", unit_price=500)]
    sale = (await f.commit(client, f.basket(member, store, lines))).json()
    [voucher] = sale["earned"]["vouchers_issued"]
    body = f.basket(member, store, [f.line(unit_price=2000)], redeem={"vouchers": [voucher["code"]]})
    async with f.row_held(app, "SELECT id FROM vouchers WHERE id = :v FOR UPDATE",
                          v=voucher["id"]) as (release, waiting):
        returning = asyncio.create_task(f.return_lines(client, sale["id"], {"1": 1}))
        await waiting(1)
        using = asyncio.create_task(f.commit(client, body))
        await waiting(2)
        await release()
        cycles = await cycles_until_done(app, returning, using)
    assert not cycles, "the return and the sale waited on each other"
    r = await returning
    assert r.status_code == 201 and r.json()["reversed"]["vouchers"] == [voucher["code"]], r.text
    assert codes([await using]) == ["voucher_expired"]
    assert (await client.get(f"/v1/vouchers/{voucher['code']}")).json()["status"] == "void"
    await f.verify_ledger(app)


async def test_a_void_and_two_returns_of_one_sale_at_once_end_where_a_void_does(app, server, cli_env):
    """Six sales, each paid with points, the wallet and a gift card; each voided and returned half by half, all
    at once. Whichever comes first, each sale ends voided or returned whole, and every balance where it began."""
    async with admin(server) as c:
        store = (await f.create_store(c))["id"]
        member = (await f.enroll(c))["id"]
        await f.adjust(c, member, 600)
        assert (await top_up(c, member, 6000)).status_code == 201
        r = await c.post("/v1/gift-cards", json={"amount": 3000}, headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text
        [card] = r.json()
        sales = []
        for _ in range(6):
            body = f.basket(member, store, [f.line(quantity=4, unit_price=2500)])
            body["redeem"] = {"points": 100, "wallet_amount": 1000, "gift_cards": [tender(card, 500)]}
            r = await f.commit(c, body)
            assert r.status_code == 201, r.text
            sales.append(r.json())
        assert await f.balance(c, member) == 600 - 6 * 100 + 6 * 99

        async def race(sale: dict) -> list[httpx.Response]:
            return list(await asyncio.gather(f.void(c, sale["id"]), f.return_lines(c, sale["id"], {"1": 2}),
                                             f.return_lines(c, sale["id"], {"1": 2})))

        answers = await asyncio.gather(*(race(sale) for sale in sales))
        for sale, (void, *returns) in zip(sales, answers, strict=True):
            outcome = codes([void, *returns])
            assert outcome in (["200", "transaction_not_returnable", "transaction_not_returnable"],
                               ["200", "201", "transaction_not_returnable"],
                               ["200", "transaction_not_returnable", "201"],
                               ["200", "201", "201"],
                               ["transaction_not_voidable", "201", "201"]), outcome
            status = (await c.get(f"/v1/checkout/transactions/{sale['id']}")).json()["status"]
            assert status == ("voided" if void.status_code == 200 else "returned")
        assert await f.balance(c, member) == 600
        assert await wallet(c, member) == 6000
        assert await card_balance(c, card) == 3000
    assert await run_cli("verify") == 0


async def test_an_adjustment_and_a_sale_taking_the_same_points_at_once_never_both_succeed(app, server, cli_env):
    """An admin writes off a member's 1,000 points while a till burns them: exactly one of the two succeeds."""
    async with admin(server) as c:
        store = (await f.create_store(c))["id"]
        members = [(await f.enroll(c))["id"] for _ in range(6)]
        for member in members:
            await f.adjust(c, member, 1000)

        async def race(member: str) -> list[httpx.Response]:
            write_off = c.post(f"/v1/members/{member}/points/adjustments", json={"amount": -1000, "reason": "race"},
                               headers={"Idempotency-Key": f.new_key()})
            burn = f.commit(c, f.basket(member, store, [f.line(unit_price=20_000)], points=1000))
            return list(await asyncio.gather(write_off, burn))

        for member, answers in zip(members, await asyncio.gather(*(race(m) for m in members)), strict=True):
            outcome = codes(answers)
            assert outcome in (["201", "insufficient_points"], ["insufficient_points", "201"]), outcome
            # the sale earns 190 on its 190.00 net; the write-off leaves nothing
            assert await f.balance(c, member) == (190 if answers[1].status_code == 201 else 0)
    assert await run_cli("verify") == 0


async def test_a_top_up_and_a_wallet_payment_at_once(app, server, cli_env):
    """The payment needs the top-up: it succeeds only if the top-up came first, and the wallet shows exactly the
    movements that happened."""
    async with admin(server) as c:
        store = (await f.create_store(c))["id"]
        members = [(await f.enroll(c))["id"] for _ in range(6)]
        for member in members:
            assert (await top_up(c, member, 1000)).status_code == 201

        async def race(member: str) -> list[httpx.Response]:
            body = f.basket(member, store, [f.line(unit_price=2000)])
            body["redeem"] = {"wallet_amount": 1200}
            return list(await asyncio.gather(top_up(c, member, 500), f.commit(c, body)))

        for member, answers in zip(members, await asyncio.gather(*(race(m) for m in members)), strict=True):
            outcome = codes(answers)
            assert outcome in (["201", "201"], ["201", "insufficient_funds"]), outcome
            assert await wallet(c, member) == 1500 - (1200 if answers[1].status_code == 201 else 0)
    assert await run_cli("verify") == 0


async def test_a_gift_card_refunded_by_a_void_while_another_till_spends_it(app, server, cli_env):
    """A card of 1,000 paid 600 of a sale; that sale is voided (or returned whole) while another member's till
    asks the whole 1,000 of the card: that spend succeeds only after the refund, and the card never goes below
    zero."""
    async with admin(server) as c:
        store = (await f.create_store(c))["id"]
        r = await c.post("/v1/gift-cards", json={"amount": 1000, "count": 4}, headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text
        cards = r.json()
        buyers = [(await f.enroll(c))["id"] for _ in cards]
        others = [(await f.enroll(c))["id"] for _ in cards]
        sales = []
        for card, buyer in zip(cards, buyers, strict=True):
            body = f.basket(buyer, store, [f.line(quantity=2, unit_price=500)])
            body["redeem"] = {"gift_cards": [tender(card, 600)]}
            r = await f.commit(c, body)
            assert r.status_code == 201, r.text
            sales.append(r.json())

        async def race(i: int) -> list[httpx.Response]:
            body = f.basket(others[i], store, [f.line(unit_price=1500)])
            body["redeem"] = {"gift_cards": [tender(cards[i], 1000)]}
            refund = f.void(c, sales[i]["id"]) if i % 2 else f.return_lines(c, sales[i]["id"], {"1": 2})
            return list(await asyncio.gather(refund, f.commit(c, body)))

        answers = await asyncio.gather(*(race(i) for i in range(len(cards))))
        for card, (refund, spend) in zip(cards, answers, strict=True):
            assert refund.status_code in (200, 201), refund.text
            assert spend.status_code == 201 or codes([spend]) == ["insufficient_funds"], spend.text
            assert await card_balance(c, card) == (0 if spend.status_code == 201 else 1000)
    assert await run_cli("verify") == 0


async def test_an_erasure_and_a_sale_at_once(app, server, cli_env):
    """README: a sale already under way when the member is erased completes as if it came first; one that starts
    after is a 404. Never a 500, and the ledger stays whole."""
    async with admin(server) as c:
        store = (await f.create_store(c))["id"]
        members = [(await f.enroll(c))["id"] for _ in range(8)]

        async def race(member: str) -> list[httpx.Response]:
            return list(await asyncio.gather(
                c.delete(f"/v1/members/{member}"),
                f.commit(c, f.basket(member, store, [f.line(unit_price=3000)])),
                top_up(c, member, 500)))

        for member, answers in zip(members, await asyncio.gather(*(race(m) for m in members)), strict=True):
            erase, sale, topped = answers
            assert erase.status_code == 204, erase.text
            assert sale.status_code == 201 or codes([sale]) == ["member_not_found"], sale.text
            assert topped.status_code == 201 or codes([topped]) == ["member_erased"], topped.text
            assert await f.balance(c, member) == (30 if sale.status_code == 201 else 0)
            assert await wallet(c, member) == (500 if topped.status_code == 201 else 0)
    assert await run_cli("verify") == 0


async def test_a_reward_used_while_the_sale_that_earned_it_is_voided(app, server, cli_env):
    """The void revokes the reward if it comes first (the till then hears reward_not_available); if the till
    comes first, the reward is used and the void leaves the card one stamp in deficit. Either way the card's
    stamps match its ledger and no reward is both used and revoked."""
    async with admin(server) as c:
        store = (await f.create_store(c))["id"]
        r = await c.post("/v1/punch-card-programs", json={
            "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 1,
            "reward": {"categories": ["pastry"]}, "reward_valid_days": 30})
        assert r.status_code == 201, r.text
        program = r.json()["id"]
        members = [(await f.enroll(c))["id"] for _ in range(6)]
        earned = []
        for member in members:
            r = await f.commit(c, f.basket(member, store, [f.line("1", "LATTE", "coffee", 1, 400)]))
            assert r.status_code == 201, r.text
            earned.append(r.json())

        async def race(member: str, sale: dict) -> list[httpx.Response]:
            [reward] = sale["earned"]["rewards_issued"]
            body = f.basket(member, store, [f.line("1", "CROISSANT", "pastry", 1, 300)])
            body["redeem"] = {"punch_rewards": [reward["id"]]}
            return list(await asyncio.gather(f.void(c, sale["id"]), f.commit(c, body)))

        answers = await asyncio.gather(*(race(m, s) for m, s in zip(members, earned, strict=True)))
        for member, (void, use) in zip(members, answers, strict=True):
            assert void.status_code == 200, void.text
            assert use.status_code == 201 or codes([use]) == ["reward_not_available"], use.text
            cards = (await c.get(f"/v1/members/{member}/punch-cards")).json()["data"]
            [card] = [card for card in cards if card["program_id"] == program]
            [reward] = card["rewards"]
            if use.status_code == 201:
                assert (reward["status"], card["stamps"]) == ("redeemed", -1)
            else:
                assert (reward["status"], card["stamps"]) == ("revoked", 0)
    assert await run_cli("verify") == 0
