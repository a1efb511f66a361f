"""Gift cards through HTTP: issue, balance check with the PIN, paying at the till (partial, several cards, after the
wallet), void and returns giving back to each card, wrong-PIN lockout and the per-key limit, the liability report
(runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import collections
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from service.giftcards.models import GiftCard
from service.idempotency import IdempotencyRecord
from service.ids import CODE_ALPHABET
from service.ratelimit import FailedAttempt
from tests import factories as f
from tests.conftest import ADMIN_KEY
from tests.server import run_cli


@pytest.fixture
async def shop(client):
    store = await f.create_store(client)
    member = await f.enroll(client)
    return store["id"], member["id"]


async def issue(client, amount: int, count: int | None = None, *, key: str | None = None):
    body = {"amount": amount} if count is None else {"amount": amount, "count": count}
    return await client.post("/v1/gift-cards", json=body, headers={"Idempotency-Key": key or f.new_key()})


async def issue_one(client, amount: int) -> dict:
    r = await issue(client, amount)
    assert r.status_code == 201, r.text
    return r.json()[0]


async def check(client, code: str, pin: str):
    return await client.get(f"/v1/gift-cards/{code}", headers={"X-Gift-Card-Pin": pin})


async def balance(client, card: dict) -> int:
    r = await check(client, card["code"], card["pin"])
    assert r.status_code == 200, r.text
    return r.json()["balance"]


def tender(card: dict, amount: int | None = None, pin: str | None = None) -> dict:
    t = {"code": card["code"], "pin": pin or card["pin"]}
    if amount is not None:
        t["amount"] = amount
    return t


def pay(member: str, store: str, lines: list[dict], cards: list[dict], wallet: int = 0, points: int = 0) -> dict:
    redeem = {"gift_cards": cards}
    if wallet:
        redeem["wallet_amount"] = wallet
    if points:
        redeem["points"] = points
    return f.basket(member, store, lines, redeem=redeem)


def wrong(pin: str) -> str:
    return f"{(int(pin) + 1) % 10**8:08d}"


async def test_issue_gives_codes_and_pins_once_and_the_balance_needs_the_pin(client, app, make_client):
    key = f.new_key()
    r = await issue(client, 5000, 3, key=key)
    assert r.status_code == 201, r.text
    cards = r.json()
    assert len(cards) == 3 and len({c["code"] for c in cards}) == 3 and len({c["id"] for c in cards}) == 3
    for card in cards:
        assert card["id"].startswith("gft_") and card["balance"] == 5000 and card["currency"] == "USD"
        assert len(card["code"]) >= 10 and set(card["code"]) <= set(CODE_ALPHABET)
        assert len(card["pin"]) == 8 and card["pin"].isdigit()
    replay = await issue(client, 5000, 3, key=key)  # the same request again: the same cards, no new ones
    assert replay.status_code == 201 and replay.json() == cards
    assert replay.headers["Idempotent-Replayed"] == "true"
    async with app.state.db.transaction(write=False) as session:  # no PIN rests in the database
        stored = (await session.execute(select(IdempotencyRecord.response_body))).scalars().all()
        hashes = (await session.execute(select(GiftCard.pin_hash))).scalars().all()
    assert len(hashes) == 3 and all(h.startswith("hmac-sha256$") for h in hashes)
    assert not any(card["pin"].encode() in body for card in cards for body in stored + [h.encode() for h in hashes])

    card = cards[0]
    r = await check(client, card["code"], card["pin"])
    assert r.status_code == 200, r.text
    assert r.json() == {"id": card["id"], "balance": 5000, "currency": "USD", "status": "active"}
    spaced = f"{card['code'][:4]}-{card['code'][4:8]} {card['code'][8:].lower()}"  # as a cashier may type it
    assert (await check(client, spaced, card["pin"])).status_code == 200
    body = f.assert_problem(await check(client, card["code"], wrong(card["pin"])), 422, "gift_card_pin_invalid")
    assert body["attempts_left"] == 4
    f.assert_problem(await check(client, "ZZZZZZZZZZZZZ", card["pin"]), 404, "gift_card_not_found")
    assert (await client.get(f"/v1/gift-cards/{card['code']}")).status_code == 422  # the PIN header is required
    assert (await check(client, card["code"], "1234")).status_code == 422  # not 8 digits

    till = make_client(await f.create_key(client, "pos", (await f.create_store(client))["id"]))
    assert (await issue(till, 100)).status_code == 403
    assert (await check(till, card["code"], card["pin"])).status_code == 200
    for bad in ({"amount": 0}, {"amount": 100, "count": 0}, {"amount": 100, "count": 501}, {"amount": "100"}):
        r = await client.post("/v1/gift-cards", json=bad, headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 422, (bad, r.text)
    await f.verify_ledger(app)


async def test_issuing_many_cards_costs_the_statements_of_a_few(client, app):
    await issue_one(client, 100)  # the key and the program are cached from here on
    counts = []
    for n in (2, 200):
        with f.counted_statements(app) as statements:
            r = await issue(client, 100, n)
        assert r.status_code == 201 and len(r.json()) == n, r.text
        counts.append(len(statements))
    assert counts[0] == counts[1], counts  # one executemany per table, whatever the count
    report = (await client.get("/v1/reports/liability")).json()
    assert report["gift_cards"] == 203 * 100 and report["gift_cards_count"] == 203
    await f.verify_ledger(app)


async def test_paying_with_one_card_partially_keeps_the_rest_on_it_and_earns_points(client, app, shop):
    store, member = shop
    card = await issue_one(client, 5000)
    q = await client.post("/v1/checkout/quote", json=pay(member, store, [f.line(unit_price=3000)], [tender(card)]))
    assert q.status_code == 200, q.text
    assert q.json()["totals"] == {"subtotal": 3000, "discount": 0, "net": 3000, "wallet": 0, "gift_cards": 3000,
                                  "payable": 0}
    assert await balance(client, card) == 5000  # a quote moves nothing

    r = await f.commit(client, pay(member, store, [f.line(unit_price=3000)], [tender(card)]))
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["totals"]["gift_cards"] == 3000 and t["totals"]["payable"] == 0
    assert {"kind": "gift_card", "id": card["id"], "line_id": None, "amount": 3000, "points": None} in t["applied"]
    assert t["earned"]["points"] == 30  # gift-card-paid spend earns like any tender
    assert await balance(client, card) == 2000

    # Without an amount the card pays what it holds; the customer pays the rest
    r = await f.commit(client, pay(member, store, [f.line(unit_price=2500)], [tender(card)]))
    assert r.status_code == 201, r.text
    assert r.json()["totals"]["gift_cards"] == 2000 and r.json()["totals"]["payable"] == 500
    r = await check(client, card["code"], card["pin"])
    assert r.json()["balance"] == 0 and r.json()["status"] == "spent"
    await f.verify_ledger(app)


async def test_several_cards_after_the_wallet_never_more_than_payable(client, app, shop):
    store, member = shop
    a, b, c = (await issue_one(client, 1000)), (await issue_one(client, 1000)), (await issue_one(client, 1000))
    r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 700, "payment_ref": "p"},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    lines = [f.line("a", unit_price=1500), f.line("b", unit_price=1000)]  # net 2500
    body = pay(member, store, lines, [tender(a, 400), tender(b), tender(c)], wallet=700)
    r = await f.commit(client, body)
    assert r.status_code == 201, r.text
    t = r.json()
    # wallet 700 first, then a: 400 asked, b: all it holds, c: the 400 still owed
    assert t["totals"] == {"subtotal": 2500, "discount": 0, "net": 2500, "wallet": 700, "gift_cards": 1800,
                           "payable": 0}
    paid = {x["id"]: x["amount"] for x in t["applied"] if x["kind"] == "gift_card"}
    assert paid == {a["id"]: 400, b["id"]: 1000, c["id"]: 400}
    assert [await balance(client, x) for x in (a, b, c)] == [600, 0, 600]
    assert t["earned"]["points"] == 25

    before = await f.entry_count(app)
    r = await f.commit(client, pay(member, store, [f.line(unit_price=500)], [tender(a, 501)]))
    f.assert_problem(r, 422, "gift_card_exceeds_payable")
    r = await f.commit(client, pay(member, store, [f.line(unit_price=5000)], [tender(a, 601)]))
    body = f.assert_problem(r, 409, "insufficient_funds")
    assert a["code"][-4:] in body["detail"]
    r = await f.commit(client, pay(member, store, [f.line(unit_price=500)], [tender(a), tender(a)]))
    assert r.status_code == 422  # one card named twice
    assert await f.entry_count(app) == before and await balance(client, a) == 600
    await f.verify_ledger(app)


async def test_void_and_returns_give_each_card_back_exactly_what_it_paid(client, app, shop):
    store, member = shop
    a, b = (await issue_one(client, 200)), (await issue_one(client, 133))
    lines = [f.line("x", quantity=3, unit_price=100), f.line("y", unit_price=100)]  # net 400
    r = await f.commit(client, pay(member, store, lines, [tender(a), tender(b)]))  # 200 + 133 = 333
    assert r.status_code == 201, r.text
    txn = r.json()["id"]
    assert [await balance(client, x) for x in (a, b)] == [0, 0]

    async def ret(line_id: str) -> dict:
        r = await f.return_lines(client, txn, {line_id: 1})
        assert r.status_code == 201, r.text
        return r.json()["reversed"]

    # 333 * 100 / 400 = 83.25 -> 83, split 200:133 -> 49.85 + 33.15 -> 50 + 33
    assert (await ret("x"))["gift_cards"] == 83
    assert [await balance(client, x) for x in (a, b)] == [50, 33]
    assert (await ret("x"))["gift_cards"] == 84  # 166.5 -> 167 in all: 100 + 67
    assert [await balance(client, x) for x in (a, b)] == [100, 67]
    r = await f.void(client, txn)
    assert r.status_code == 200, r.text
    assert [await balance(client, x) for x in (a, b)] == [200, 133]
    await f.verify_ledger(app)


async def test_returning_everything_gives_every_card_back_in_full(client, app, shop):
    store, member = shop
    a, b, c = (await issue_one(client, 97)), (await issue_one(client, 1)), (await issue_one(client, 2))
    lines = [f.line("x", quantity=3, unit_price=33), f.line("y", unit_price=1)]  # net 100
    r = await f.commit(client, pay(member, store, lines, [tender(a), tender(b), tender(c)]))
    assert r.status_code == 201, r.text
    txn = r.json()["id"]
    total = 0
    for line_id in ("x", "x", "y", "x"):
        r = await f.return_lines(client, txn, {line_id: 1})
        assert r.status_code == 201, r.text
        total += r.json()["reversed"]["gift_cards"]
    assert total == 100
    assert [await balance(client, x) for x in (a, b, c)] == [97, 1, 2]
    await f.verify_ledger(app)


async def test_a_return_gives_back_no_more_stored_value_than_its_goods_were_worth(client, app, shop):
    """The wallet and the cards are refunded as one: 2 units at 1 paid 1 from the wallet and 1 by card, then one
    unit back. Each rounded on its own (half of 1 is 1), both gave back 1: the whole sale for half its goods."""
    from tests.test_wallet import top_up

    store, member = shop
    assert (await top_up(client, member, 1)).status_code == 201
    card = await issue_one(client, 1)
    r = await f.commit(client, pay(member, store, [f.line("x", quantity=2, unit_price=1)], [tender(card, 1)],
                                   wallet=1))
    assert r.status_code == 201, r.text
    txn = r.json()["id"]
    back = (await f.return_lines(client, txn, {"x": 1})).json()["reversed"]
    assert (back["qualifying_spend"], back["wallet"] + back["gift_cards"]) == (1, 1), back
    last = (await f.return_lines(client, txn, {"x": 1})).json()["reversed"]
    assert last["wallet"] + last["gift_cards"] == 1, last
    assert await balance(client, card) == 1
    await f.verify_ledger(app)


async def test_half_the_goods_of_many_lines_give_back_half_the_card(client, app, shop):
    """Ten lines of 2 units at 1, 10 points burned: each line nets 1, the card pays 10. One unit of every line back
    is goods worth 5. The returned spend was rounded line by line (half of 1 is 1), so it came to 10, and the
    card, and the cash the till refunds from it, got back all 10 for half the goods."""
    store, member = shop
    await f.adjust(client, member, 10)
    card = await issue_one(client, 10)
    lines = [f.line(str(i), sku=f"S{i}", quantity=2, unit_price=1) for i in range(10)]
    r = await f.commit(client, pay(member, store, lines, [tender(card)], points=10))
    assert r.status_code == 201, r.text
    assert (r.json()["totals"]["net"], r.json()["totals"]["gift_cards"]) == (10, 10)
    txn = r.json()["id"]
    back = (await f.return_lines(client, txn, {str(i): 1 for i in range(10)})).json()["reversed"]
    assert (back["qualifying_spend"], back["gift_cards"]) == (5, 5), back
    rest = (await f.return_lines(client, txn, {str(i): 1 for i in range(10)})).json()["reversed"]
    assert (rest["qualifying_spend"], rest["gift_cards"]) == (5, 5), rest
    assert await balance(client, card) == 10
    await f.verify_ledger(app)


async def test_returning_a_unit_at_a_time_gives_the_cards_back_a_unit_at_a_time(client, app, shop):
    """Three cards of 1 pay 3 units at 1. The cards' cumulative split once fell as more came back ([1, 0, 0] after
    one unit, [0, 1, 1] after two), and the fall was dropped: two units returned gave back all three cards."""
    store, member = shop
    cards = [await issue_one(client, 1) for _ in range(3)]
    r = await f.commit(client, pay(member, store, [f.line("x", quantity=3, unit_price=1)],
                                   [tender(c, 1) for c in cards]))
    assert r.status_code == 201, r.text
    txn = r.json()["id"]
    for _ in range(3):
        r = await f.return_lines(client, txn, {"x": 1})
        assert r.status_code == 201, r.text
        assert r.json()["reversed"]["gift_cards"] == 1, r.json()["reversed"]
    assert [await balance(client, c) for c in cards] == [1, 1, 1]
    await f.verify_ledger(app)


async def test_five_wrong_pins_in_an_hour_lock_the_card_until_the_hour_is_over(client, app, clock, shop):
    store, member = shop
    clock.freeze(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    card = await issue_one(client, 1000)
    bad = wrong(card["pin"])
    for left in (4, 3, 2):
        body = f.assert_problem(await check(client, card["code"], bad), 422, "gift_card_pin_invalid")
        assert body["attempts_left"] == left
        clock.advance(timedelta(minutes=10))
    # wrong PINs at the till count the same (10:30, 10:40)
    r = await f.commit(client, pay(member, store, [f.line(unit_price=100)], [tender(card, pin=bad)]))
    f.assert_problem(r, 422, "gift_card_pin_invalid")
    clock.advance(timedelta(minutes=10))
    body = f.assert_problem(await check(client, card["code"], bad), 422, "gift_card_pin_invalid")
    assert body["attempts_left"] == 0 and "locked" in body["detail"]

    # locked: even the right PIN is refused, at the counter and at the till, and says so
    r = await check(client, card["code"], card["pin"])
    body = f.assert_problem(r, 409, "gift_card_locked")
    assert int(r.headers["Retry-After"]) == 20 * 60  # the first wrong PIN (10:00) leaves the hour at 11:00
    r = await f.commit(client, pay(member, store, [f.line(unit_price=100)], [tender(card)]))
    f.assert_problem(r, 409, "gift_card_locked")
    clock.advance(timedelta(minutes=19, seconds=59))
    f.assert_problem(await check(client, card["code"], card["pin"]), 409, "gift_card_locked")
    clock.advance(timedelta(seconds=1))  # 11:00: four wrong PINs in the last hour
    assert await balance(client, card) == 1000
    r = await f.commit(client, pay(member, store, [f.line(unit_price=100)], [tender(card)]))
    assert r.status_code == 201, r.text
    assert await balance(client, card) == 900
    # another card is not affected by this one's lock
    other = await issue_one(client, 10)
    assert await balance(client, other) == 10
    await f.verify_ledger(app)


async def test_wrong_codes_and_pins_are_limited_per_api_key(client, app, clock, make_client):
    clock.freeze(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    store = (await f.create_store(client))["id"]
    cards = [await issue_one(client, 100) for _ in range(4)]
    till = make_client(await f.create_key(client, "pos", store))
    other_till = make_client(await f.create_key(client, "pos", store))
    # ten failures spread over cards (no card reaches its own limit) and unknown codes
    for i in range(10):
        card = cards[i % 4]
        if i % 3 == 2:
            r = await check(till, f"ZZZZZZZZZZZ{i:02d}", card["pin"])
            assert r.status_code == 404, r.text
        else:
            r = await check(till, card["code"], wrong(card["pin"]))
            assert r.status_code == 422, r.text
        clock.advance(timedelta(seconds=30))
    r = await check(till, cards[0]["code"], cards[0]["pin"])  # even a right PIN: the key is limited
    f.assert_problem(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) == 10 * 60 - 5 * 60  # the first failure (10:00) leaves at 10:10
    store_body = pay((await f.enroll(client))["id"], store, [f.line(unit_price=50)], [tender(cards[0])])
    f.assert_problem(await f.commit(till, store_body), 429, "rate_limited")
    assert (await check(other_till, cards[0]["code"], cards[0]["pin"])).status_code == 200  # other keys are not
    clock.advance(timedelta(minutes=5))
    assert (await check(till, cards[0]["code"], cards[0]["pin"])).status_code == 200
    assert (await f.commit(till, store_body)).status_code == 201


async def test_the_sweep_forgets_failures_older_than_a_day(client, app, clock, cli_env):
    card = await issue_one(client, 100)
    clock.freeze(datetime.now(UTC) - timedelta(days=1, minutes=1))
    assert (await check(client, card["code"], wrong(card["pin"]))).status_code == 422
    clock.freeze(datetime.now(UTC))
    body = f.assert_problem(await check(client, card["code"], wrong(card["pin"])), 422, "gift_card_pin_invalid")
    assert body["attempts_left"] == 4  # the old failure is out of the window already
    assert await run_cli("sweep") == 0
    async with app.state.db.transaction(write=False) as session:
        left = (await session.execute(select(FailedAttempt.at))).scalars().all()
    assert len(left) == 2  # the recent one, counted per card and per key


async def test_liability_report_counts_what_the_cards_still_hold(client, app, shop, cli_env):
    store, member = shop
    a, b, c = (await issue_one(client, 1000)), (await issue_one(client, 250)), (await issue_one(client, 300))
    r = await f.commit(client, pay(member, store, [f.line(unit_price=300)], [tender(c)]))
    assert r.status_code == 201, r.text
    r = await f.commit(client, pay(member, store, [f.line(unit_price=400)], [tender(a, 400)]))
    assert r.status_code == 201, r.text
    report = (await client.get("/v1/reports/liability")).json()
    held = [await balance(client, x) for x in (a, b, c)]
    assert held == [600, 250, 0]
    assert report["gift_cards"] == sum(held) and report["gift_cards_count"] == 2
    await f.verify_ledger(app)
    assert await run_cli("verify") == 0


@pytest.mark.postgres_only
async def test_tills_spending_the_same_cards_at_once_never_overdraw_them(server, cli_env):
    """Ten tills, ten members (so no member lock serializes them): only the cards' locks stand between them. Each
    asks 300 from both cards, handed over in either order: exactly three succeed and no card goes below zero."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=20)) as c:
        assert (await c.post("/v1/stores", json={"id": "race-g", "name": "Race", "timezone": "UTC"})).status_code == 201
        members = []
        for _ in range(10):
            r = await c.post("/v1/members", json={"name": "Racer", "phone": f.unique_phone(),
                                                  "email": f.unique_email()})
            members.append(r.json()["id"])
        r = await c.post("/v1/gift-cards", json={"amount": 1000, "count": 2}, headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text
        x, y = r.json()

        async def spend(i: int) -> httpx.Response:
            cards = [tender(x, 300), tender(y, 300)] if i % 2 else [tender(y, 300), tender(x, 300)]
            body = {"receipt_id": f"gift-race-{i}", "member": {"member_id": members[i]}, "store_id": "race-g",
                    "currency": "USD", "lines": [f.line(unit_price=1500)], "redeem": {"gift_cards": cards}}
            return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"gr-{i}"})

        answers = await asyncio.gather(*(spend(i) for i in range(10)))
        assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 7, [a.text for a in answers]
        assert all(a.json()["code"] == "insufficient_funds" for a in answers if a.status_code == 409)
        assert [await balance(c, card) for card in (x, y)] == [100, 100]

        # one card, two tills: exactly one of two full spends succeeds
        r = await c.post("/v1/gift-cards", json={"amount": 500}, headers={"Idempotency-Key": f.new_key()})
        (z,) = r.json()

        async def spend_all(i: int) -> httpx.Response:
            body = {"receipt_id": f"gift-race-z{i}", "member": {"member_id": members[i]}, "store_id": "race-g",
                    "currency": "USD", "lines": [f.line(unit_price=800)], "redeem": {"gift_cards": [tender(z, 500)]}}
            return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"gz-{i}"})

        answers = await asyncio.gather(spend_all(0), spend_all(1))
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        assert await balance(c, z) == 0

    assert await run_cli("verify") == 0


async def test_a_burst_of_wrong_pins_gets_no_more_tries_than_the_limit(server, cli_env):
    """Forty different wrong PINs for one card at once, across the server's processes: five are tried (422), every
    other is refused as locked before its PIN is looked at. (Failures were written after each request, so every
    request in flight passed the check: half of such a burst was tried.) Twenty cards checked at once with their
    right PINs by one key all answer: a key's failures are counted when they happen, not its tries."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=40)) as c:
        r = await c.post("/v1/gift-cards", json={"amount": 100, "count": 21}, headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text
        target, *others = r.json()
        guesses = [f"{(int(target['pin']) + i) % 10**8:08d}" for i in range(1, 41)]
        answers = await asyncio.gather(*(check(c, target["code"], pin) for pin in guesses))
        seen = collections.Counter((a.status_code, a.json()["code"]) for a in answers)
        assert seen == {(409, "gift_card_locked"): 35, (422, "gift_card_pin_invalid"): 5}, seen
        f.assert_problem(await check(c, target["code"], target["pin"]), 409, "gift_card_locked")
        answers = await asyncio.gather(*(check(c, card["code"], card["pin"]) for card in others))
        assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_payments_voids_and_returns_keep_every_card_whole(client, app, shop, seed):
    store, member = shop
    rng = random.Random(seed)
    cards = [await issue_one(client, rng.randint(1, 800)) for _ in range(3)]
    txns: list[str] = []
    for _ in range(14):
        op = rng.choice(["pay", "pay", "void", "return"])
        if op == "pay":
            chosen = rng.sample(cards, rng.randint(1, 3))
            lines = [f.line("a", quantity=rng.randint(1, 3), unit_price=rng.randint(1, 300)),
                     f.line("b", unit_price=rng.randint(1, 300))]
            tenders = [tender(c, rng.choice([None, rng.randint(1, 200)])) for c in chosen]
            r = await f.commit(client, pay(member, store, lines, tenders))
            assert r.status_code in (201, 409, 422), r.text
            if r.status_code == 201:
                txns.append(r.json()["id"])
            else:
                assert r.json()["code"] in ("insufficient_funds", "gift_card_exceeds_payable"), r.text
        elif txns:
            txn = rng.choice(txns)
            if op == "void":
                r = await f.void(client, txn)
            else:
                r = await f.return_lines(client, txn, {"b": 1})
            assert r.status_code in (200, 201, 409, 422), r.text
        held = [await balance(client, c) for c in cards]
        assert all(h >= 0 for h in held)
    report = (await client.get("/v1/reports/liability")).json()
    assert report["gift_cards"] == sum(held) and report["gift_cards_count"] == sum(1 for h in held if h > 0)
    for txn in txns:  # voiding everything gives every card back its whole first balance
        await f.void(client, txn)
    assert [await balance(client, c) for c in cards] == [c["balance"] for c in cards]
    await f.verify_ledger(app)
