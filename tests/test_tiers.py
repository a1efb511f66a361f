"""Tiers through HTTP (SQLite and PostgreSQL): upgrades in the commit, benefits at the till, voids and returns,
scheduled reviews (sweep and lazy read), backdated transactions. Default ladder: member 0, silver 500.00,
gold 1500.00 (5 % off, ×1.5 points), a 12-month window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.points.rules import add_months
from tests import factories as f
from tests.server import run_cli

T0 = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(client):
    return (await f.create_store(client))["id"]


async def buy(client, member, store, *amounts, **extra) -> dict:
    lines = [f.line(str(i), unit_price=a) for i, a in enumerate(amounts, 1)]
    r = await f.commit(client, f.basket(member, store, lines, **extra))
    assert r.status_code == 201, r.text
    return r.json()


async def tier(client, member) -> dict:
    r = await client.get(f"/v1/members/{member}/tier")
    assert r.status_code == 200, r.text
    return r.json()


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_upgrade_by_one_and_by_two_levels_in_one_commit(client, store, clock):
    clock.freeze(T0)
    one, two = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    t = await buy(client, one, store, 30_000)
    assert t["tier_change"] is None
    assert (await tier(client, one))["spend_to_next"] == 20_000
    t = await buy(client, one, store, 20_000)  # 500.00 in the window: silver at once
    assert t["tier_change"] == {"from": "member", "to": "silver"}
    got = (await client.get(f"/v1/checkout/transactions/{t['id']}")).json()
    assert got["tier_change"] == {"from": "member", "to": "silver"}
    info = await tier(client, one)
    assert info["code"] == "silver" and info["qualifying_spend"] == 50_000
    assert info["next_tier"] == "gold" and info["spend_to_next"] == 100_000
    assert info["attained_at"] == iso(T0) and info["review_at"] == iso(add_months(T0, 12))
    assert info["history"] == [{"from": "member", "to": "silver", "at": iso(T0), "reason": "qualifying_spend"}]
    assert (await client.get(f"/v1/members/{one}")).json()["tier"] == "silver"

    t = await buy(client, two, store, 100_000, 60_000)  # straight to gold
    assert t["tier_change"] == {"from": "member", "to": "gold"}
    info = await tier(client, two)
    assert info["code"] == "gold" and info["next_tier"] is None and info["spend_to_next"] is None
    assert info["perks"] == ["Birthday treat", "Free delivery"]
    assert [(h["from"], h["to"]) for h in info["history"]] == [("member", "gold")]
    assert (await buy(client, two, store, 1000))["tier_change"] is None


async def test_multiplier_discount_and_nudge_at_the_till(client, store):
    member = (await f.enroll(client))["id"]
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=1000)]))).json()
    assert {"kind": "tier", "text": "Spend 500.00 USD more to reach Silver", "tier": "Silver",
            "amount": 50_000} in q["nudges"]
    await buy(client, member, store, 150_000)  # earned at the member tier: 1500 points
    t = await buy(client, member, store, 10_000)
    assert t["applied"] == [{"kind": "tier_discount", "id": "gold", "line_id": "1", "amount": 500, "points": None}]
    assert t["totals"]["net"] == 9_500
    assert t["earned"]["points"] == 142  # 95.00 × 1 × 1.5, floored
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=1000)]))).json()
    assert q["member"]["tier"] == "gold" and not [n for n in q["nudges"] if n["kind"] == "tier"]
    assert q["greeting"]["occasion"] == "tier_upgrade" and q["greeting"]["locale"] == "en"
    assert q["greeting"]["text"].endswith(", Jane Doe! Welcome to Gold!")
    assert any(o["kind"] == "tier_discount" and o["value"] == 50 for o in q["offers"])


async def test_the_tier_offer_is_worth_what_the_tier_discount_takes_after_a_punch_reward(client, store):
    """The tier discount comes after the punch rewards (DESIGN §4 steps 1-2): the quote's tier offer is worth what
    the quote and its commit take off, on the lines as the reward left them."""
    program = (await client.get("/v1/program")).json()
    program["tiers"][0]["discount_percent"] = 10
    assert (await client.put("/v1/program", json=program)).status_code == 200
    r = await client.post("/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 1,
        "reward_valid_days": 30, "active": True})
    assert r.status_code == 201, r.text
    member = (await f.enroll(client))["id"]
    r = await f.commit(client, f.basket(member, store, [f.line("1", "LATTE", "coffee", 1, 500)]))
    assert r.status_code == 201, r.text
    [reward] = r.json()["earned"]["rewards_issued"]
    body = f.basket(member, store, [f.line("1", "LATTE", "coffee", 2, 500)], redeem={"punch_rewards": [reward["id"]]})
    q = (await client.post("/v1/checkout/quote", json=body)).json()
    assert [(a["kind"], a["amount"]) for a in q["applied"]] == [("punch_reward", 500), ("tier_discount", 50)]
    [offer] = [o for o in q["offers"] if o["kind"] == "tier_discount"]
    assert offer["value"] == 50 and offer["applicable"]  # 10 % of the 5.00 left, not of the 10.00 before
    r = await f.commit(client, body)
    assert r.status_code == 201, r.text
    assert r.json()["applied"] == q["applied"]


async def test_a_void_or_return_takes_back_the_upgrade_its_sale_made(client, store, clock):
    clock.freeze(T0)
    # A return that leaves the sale short of the tier it reached: back to the tier the sale found.
    member = (await f.enroll(client))["id"]
    t = await buy(client, member, store, 30_000, 30_000)
    assert t["tier_change"] == {"from": "member", "to": "silver"}
    r = await f.return_lines(client, t["id"], {"1": 1})
    assert r.status_code == 201 and r.json()["reversed"]["qualifying_spend"] == 30_000, r.text
    info = await tier(client, member)
    assert info["code"] == "member" and info["qualifying_spend"] == 30_000 and info["review_at"] is None
    assert [(h["from"], h["to"], h["reason"]) for h in info["history"]] == [
        ("member", "silver", "qualifying_spend"), ("silver", "member", "reversal")]
    assert (await f.void(client, t["id"])).status_code == 200  # nothing more to take back
    assert len((await tier(client, member))["history"]) == 2
    # Part of it still reaches a tier between: the sale attained that one.
    member = (await f.enroll(client))["id"]
    t = await buy(client, member, store, 100_000, 60_000)
    assert t["tier_change"] == {"from": "member", "to": "gold"}
    assert (await f.return_lines(client, t["id"], {"1": 1})).status_code == 201
    info = await tier(client, member)
    assert info["code"] == "silver" and info["attained_at"] == iso(T0)
    assert info["review_at"] == iso(add_months(T0, 12))
    # A void of a sale that lifted silver to gold: silver again, attained when it was, reviewed as it was to be.
    member = (await f.enroll(client))["id"]
    assert (await buy(client, member, store, 60_000))["tier_change"] == {"from": "member", "to": "silver"}
    clock.freeze(T0 + timedelta(days=1))
    lift = await buy(client, member, store, 120_000)
    assert lift["tier_change"] == {"from": "silver", "to": "gold"}
    assert (await f.void(client, lift["id"])).status_code == 200
    info = await tier(client, member)
    assert info["code"] == "silver" and info["attained_at"] == iso(T0)
    assert info["review_at"] == iso(add_months(T0, 12)) and info["qualifying_spend"] == 60_000
    # A purchase split in two, silver by the first half and gold by the second: the first's void leaves the
    # second's upgrade without its spend (120,000 is silver's). Until 2026-12-07 gold stayed for a year.
    member = (await f.enroll(client))["id"]
    first = await buy(client, member, store, 60_000)
    assert (await buy(client, member, store, 120_000))["tier_change"] == {"from": "silver", "to": "gold"}
    assert (await f.void(client, first["id"])).status_code == 200
    info = await tier(client, member)
    assert (info["code"], info["qualifying_spend"]) == ("silver", 120_000)
    # A sale split so that its second half reaches gold alone: the first half's void takes nothing.
    member = (await f.enroll(client))["id"]
    first = await buy(client, member, store, 60_000)
    assert (await buy(client, member, store, 160_000))["tier_change"] == {"from": "silver", "to": "gold"}
    assert (await f.void(client, first["id"])).status_code == 200
    assert (await tier(client, member))["code"] == "gold"
    # Returned in two steps, the sale that lifted a member to gold takes back silver too once nothing is left.
    member = (await f.enroll(client))["id"]
    t = await buy(client, member, store, 100_000, 60_000)
    assert (await f.return_lines(client, t["id"], {"1": 1})).status_code == 201
    assert (await tier(client, member))["code"] == "silver"
    assert (await f.return_lines(client, t["id"], {"2": 1})).status_code == 201
    info = await tier(client, member)
    assert (info["code"], info["qualifying_spend"], info["review_at"]) == ("member", 0, None)
    # A sale that made gold, voided after a later sale reached gold alone: gold stays.
    member = (await f.enroll(client))["id"]
    lift = await buy(client, member, store, 160_000)
    assert lift["tier_change"] == {"from": "member", "to": "gold"}
    clock.freeze(T0 + timedelta(days=2))
    await buy(client, member, store, 170_000)
    assert (await f.void(client, lift["id"])).status_code == 200
    assert (await tier(client, member))["code"] == "gold"


async def test_reviews_keep_then_drop_one_level(client, store, clock):
    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    await buy(client, member, store, 160_000)  # gold at T0
    clock.freeze(T0 + timedelta(days=200))
    await buy(client, member, store, 150_000)  # gold again within the first year
    r1 = add_months(T0, 12)
    clock.freeze(r1 - timedelta(seconds=1))
    assert (await tier(client, member))["review_at"] == iso(r1)
    clock.freeze(r1)  # the review is due exactly now: 1500.00 in [r1 − 12 months, r1) keeps gold
    info = await tier(client, member)
    assert info["code"] == "gold" and info["attained_at"] == iso(T0) and info["review_at"] == iso(add_months(T0, 24))
    assert len(info["history"]) == 1
    clock.freeze(add_months(T0, 24) + timedelta(days=3))  # nothing spent in the second year: down one level only
    info = await tier(client, member)
    r2 = add_months(T0, 24)
    assert info["code"] == "silver" and info["attained_at"] == iso(r2) and info["review_at"] == iso(add_months(r2, 12))
    assert info["history"][-1] == {"from": "gold", "to": "silver", "at": iso(r2), "reason": "review"}
    assert (await tier(client, member))["history"] == info["history"]  # idempotent


async def test_the_till_look_up_shows_a_review_fallen_due_before_anything_writes_it(client, store, clock, app):
    clock.freeze(T0)
    member = await f.enroll(client)
    await buy(client, member["id"], store, 160_000)  # gold at T0; nothing spent after
    # Two reviews fell due and none was written: the first (its window holds the sale) kept gold, the second (an
    # empty year) took the member down to silver.
    clock.freeze(add_months(T0, 24) + timedelta(days=1))

    async def looked_up() -> str:
        r = await client.get("/v1/members", params={"card_number": member["card_number"]})
        assert r.status_code == 200, r.text
        return r.json()["data"][0]["tier"]

    async def stored() -> str:
        async with app.state.db.session(write=False) as session:
            return (await session.execute(text("SELECT tier_code FROM members WHERE id = :m"),
                                          {"m": member["id"]})).scalar_one()

    assert await looked_up() == "silver"  # as the quote and a read by id would say
    assert await stored() == "gold"  # the look-up wrote nothing: the next read by id, sale or sweep does
    assert (await tier(client, member["id"]))["code"] == "silver"
    assert await stored() == "silver" and await looked_up() == "silver"


async def test_several_overdue_reviews_replay_the_same_by_sweep_and_by_lazy_read(client, store, clock, cli_env,
                                                                                 capsys):
    clock.freeze(T0)
    swept, lazy = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    for member in (swept, lazy):
        await buy(client, member, store, 160_000)
    # three overdue reviews: T0+12 keeps gold (T0's spend is in [T0, T0+12)), T0+24 drops to silver, T0+36 to member
    now = add_months(T0, 40)
    clock.freeze(now)
    read = await tier(client, lazy)
    assert await run_cli("sweep", "--allow-future", "--as-of", iso(now)) == 0
    out = capsys.readouterr().out
    assert "reviewed the tiers of 1 members, 2 tier changes" in out
    assert await run_cli("sweep", "--allow-future", "--as-of", iso(now)) == 0
    assert "reviewed the tiers of 0 members, 0 tier changes" in capsys.readouterr().out
    swept_info = await tier(client, swept)
    assert swept_info == read
    assert read["code"] == "member" and read["review_at"] is None
    assert [(h["from"], h["to"], h["at"], h["reason"]) for h in read["history"]] == [
        ("member", "gold", iso(T0), "qualifying_spend"),
        ("gold", "silver", iso(add_months(T0, 24)), "review"),
        ("silver", "member", iso(add_months(T0, 36)), "review")]


async def test_backdated_transactions_count_at_their_time(client, store, clock):
    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    older = T0 - timedelta(days=800)  # an import's history, oldest first: too little alone in its window
    assert (await buy(client, member, store, 10_000, occurred_at=iso(older)))["tier_change"] is None
    # Before the current window: judged on the window that ends with it, as a till would have judged it then.
    old = T0 - timedelta(days=400)
    t = await buy(client, member, store, 200_000, occurred_at=iso(old))
    assert t["tier_change"] == {"from": "member", "to": "gold"}
    info = await tier(client, member)  # its first review (old + 12 months, past) found the sale in its window
    assert info["code"] == "gold" and info["attained_at"] == iso(old)
    assert info["review_at"] == iso(add_months(old, 24)) and info["qualifying_spend"] == 0  # the window now
    when = add_months(T0, -11)  # inside the current window: counts now
    t = await buy(client, member, store, 60_000, occurred_at=iso(when))
    assert t["tier_change"] is None  # gold holds: no upgrade; its net (after gold's discount) counts now
    assert (await tier(client, member))["qualifying_spend"] == t["totals"]["net"] < 60_000
    clock.freeze(add_months(old, 24))  # [old + 12, old + 24) holds neither sale: down one level
    info = await tier(client, member)
    assert info["code"] == "silver" and info["review_at"] == iso(add_months(old, 36))
    clock.freeze(add_months(old, 36))  # nor does the next window: down to the entry tier
    assert (await tier(client, member))["code"] == "member"


async def test_a_history_replayed_oldest_first_upgrades_once_and_is_reviewed_in_order(client, store, clock):
    """An import's history: backdated sales, oldest first, with no read between them. Each is judged with the
    reviews due by its own time applied. The reviews due by now were applied before each sale, before its spend
    counted: the member fell at a review whose window was to hold the sale, the sale was priced at the entry tier,
    and it upgraded again, a fall and a rise per sale, out of order in the history and in the events."""
    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    first = T0 - timedelta(days=800)
    assert (await buy(client, member, store, 60_000, occurred_at=iso(first)))["tier_change"] == {
        "from": "member", "to": "silver"}
    for days in (790, 780):
        t = await buy(client, member, store, 10_000, occurred_at=iso(T0 - timedelta(days=days)))
        assert t["tier_change"] is None
        assert t["earned"]["points"] == 125  # silver's 1.25 on 100.00, as the till would have earned it then
    info = await tier(client, member)  # the reviews due by now: the first window holds all three, the next none
    assert info["code"] == "member"
    assert [(h["from"], h["to"], h["at"], h["reason"]) for h in info["history"]] == [
        ("member", "silver", iso(first), "qualifying_spend"),
        ("silver", "member", iso(add_months(first, 24)), "review")]


async def test_greeting_mentions_only_a_fresh_upgrade(client, store, clock):
    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    await buy(client, member, store, 60_000)
    clock.freeze(T0 + timedelta(days=30))
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store))).json()
    assert q["greeting"]["occasion"] == "tier_upgrade" and q["member"]["tier"] == "silver"
    clock.freeze(T0 + timedelta(days=31))
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store))).json()
    assert q["greeting"]["occasion"] == "regular" and q["member"]["tier"] == "silver"


async def test_a_changed_ladder_applies_to_future_upgrades_and_reviews_not_history(client, store, clock):
    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    await buy(client, member, store, 60_000)  # silver under the default ladder
    program = (await client.get("/v1/program")).json()
    program["tiers"][1]["min_qualifying_spend"] = 70_000
    program["tiers"][2]["min_qualifying_spend"] = 100_000
    assert (await client.put("/v1/program", json=program)).status_code == 200
    info = await tier(client, member)
    assert info["code"] == "silver" and info["spend_to_next"] == 40_000  # no downgrade before the review
    assert (await buy(client, member, store, 40_000))["tier_change"] == {"from": "silver", "to": "gold"}
    info = await tier(client, member)
    assert [(h["from"], h["to"]) for h in info["history"]] == [("member", "silver"), ("silver", "gold")]


@pytest.mark.postgres_only
async def test_concurrent_commits_upgrade_exactly_once(server):
    import asyncio

    import httpx

    from tests.conftest import ADMIN_KEY

    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=20)) as c:
        assert (await c.post("/v1/stores", json={"id": "tier-race", "name": "Race"})).status_code == 201
        member = (await c.post("/v1/members", json={"name": "Racer", "phone": f.unique_phone()})).json()["id"]

        async def spend(i: int) -> httpx.Response:
            body = {"receipt_id": f"tier-{i}", "member": {"member_id": member}, "store_id": "tier-race",
                    "currency": "USD", "lines": [f.line(unit_price=10_000)]}
            return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"tier-{i}"})

        answers = await asyncio.gather(*(spend(i) for i in range(12)))
        assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
        changes = [a.json()["tier_change"] for a in answers if a.json()["tier_change"]]
        assert changes == [{"from": "member", "to": "silver"}]
        info = (await c.get(f"/v1/members/{member}/tier")).json()
        assert info["qualifying_spend"] == 120_000 and len(info["history"]) == 1


async def test_window_spend_is_exact_at_its_edge_across_day_sums(client, store, clock):
    """The window's spend comes from per-day sums plus the rows of its first, partial day: a purchase a second
    before the window's start is out, one at the start and later that day are in, as are whole days after;
    returns and voids move the day sums with their transaction."""
    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    start = add_months(T0, -12)
    spent = {}
    for label, at, amount in (("before", start - timedelta(seconds=1), 1_000), ("at", start, 2_000),
                              ("same day", start + timedelta(hours=3), 4_000),
                              ("next day", start + timedelta(days=1), 8_000),
                              ("recent", T0 - timedelta(days=2), 16_000)):
        spent[label] = await buy(client, member, store, amount, occurred_at=iso(at))
    assert (await tier(client, member))["qualifying_spend"] == 2_000 + 4_000 + 8_000 + 16_000
    r = await client.post(f"/v1/checkout/transactions/{spent['next day']['id']}/void",
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/checkout/transactions/{spent['same day']['id']}/returns",
                          json={"lines": [{"line_id": "1", "quantity": 1}]}, headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    assert (await tier(client, member))["qualifying_spend"] == 2_000 + 16_000
    clock.freeze(T0 + timedelta(seconds=1))  # the window moves a second: the purchase at its old start leaves
    assert (await tier(client, member))["qualifying_spend"] == 16_000


async def test_a_quote_shows_a_due_review_without_applying_it(client, app, store, clock):
    from sqlalchemy import func, select

    from service.tiers.models import TierHistory

    async def history_rows() -> int:
        async with app.state.db.transaction(write=False) as session:
            return await session.scalar(select(func.count()).select_from(TierHistory))

    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    await buy(client, member, store, 160_000)  # gold at T0
    clock.freeze(add_months(T0, 24) + timedelta(days=3))  # two reviews due: gold kept, then down to silver
    before = await history_rows()
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=1000)]))).json()
    assert q["member"]["tier"] == "silver"
    assert not [a for a in q["applied"] if a["kind"] == "tier_discount"]  # gold's 5 % off is gone
    assert await history_rows() == before  # nothing written: the review waits for a commit or a read
    t = await buy(client, member, store, 1000)  # the commit applies it under the tier lock
    assert t["applied"] == [] and t["totals"]["net"] == 1000
    assert await history_rows() == before + 1
    assert (await tier(client, member))["history"][-1] == {
        "from": "gold", "to": "silver", "at": iso(add_months(T0, 24)), "reason": "review"}


@pytest.mark.postgres_only
async def test_a_commit_waiting_on_a_review_prices_with_the_tier_the_review_left(client, app, store, clock):
    """A review (``loyalty sweep`` or a member read in another process) holds the member's tier lock and moves
    them down while a commit waits for that lock: the commit prices with the tier as the review left it. Under
    PostgreSQL's READ COMMITTED a statement that waited for a row lock returns the locked row's new version but
    the statement's old snapshot of every other table, so the tier code must be read after the lock, not with
    it (it was read with it, and this sale got gold's 5 % off after the downgrade)."""
    import asyncio

    from sqlalchemy import text

    clock.freeze(T0)
    member = (await f.enroll(client))["id"]
    await buy(client, member, store, 160_000)  # gold at T0
    review = add_months(T0, 24)
    clock.freeze(review + timedelta(days=3))  # two reviews due: gold kept, then down to silver
    async with app.state.db.transaction() as review_session:
        await review_session.execute(text("SELECT 1 FROM tier_states WHERE member_id = :m FOR UPDATE"), {"m": member})
        await review_session.execute(text("UPDATE members SET tier_code = 'silver' WHERE id = :m"), {"m": member})
        await review_session.execute(text(
            "UPDATE tier_states SET attained_at = :at, review_at = :next WHERE member_id = :m"),
            {"m": member, "at": review, "next": add_months(review, 12)})
        sale = asyncio.create_task(f.commit(client, f.basket(member, store, [f.line(unit_price=1000)])))
        async with app.state.db.transaction() as watcher:
            for _ in range(200):  # until the commit waits for the tier lock held here
                await asyncio.sleep(0.02)
                if await watcher.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                    break
            else:
                raise AssertionError("the commit never waited for the tier lock")
    r = await sale
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["applied"] == [] and t["totals"]["net"] == 1000 and t["tier_change"] is None
    assert (await tier(client, member))["code"] == "silver"


async def test_a_member_of_a_tier_taken_off_the_ladder_has_the_first_tier_everywhere(client):
    """Gold taken off the ladder while a member holds it: the member is priced at the first tier, and is shown
    and matched by voucher audiences as it too. The member's own read and the audiences said gold."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    r = await f.commit(client, f.basket(member, store, [f.line("1", unit_price=150_000)]))
    assert r.json()["tier_change"]["to"] == "gold", r.text
    r = await client.post("/v1/voucher-campaigns", json={"name": "Gold thanks", "kind": "amount_off", "value": 100,
                                                         "audience": {"tiers": ["gold"]}})
    assert r.status_code == 201, r.text
    campaign = r.json()["id"]
    program = (await client.get("/v1/program")).json()
    program["tiers"] = [t for t in program["tiers"] if t["code"] != "gold"]
    assert (await client.put("/v1/program", json=program)).status_code == 200
    first = program["tiers"][0]["code"]
    quote = (await client.post("/v1/checkout/quote", json=f.basket(member, store))).json()
    summary = (await client.get(f"/v1/members/{member}/summary")).json()
    assert {(await client.get(f"/v1/members/{member}")).json()["tier"], quote["member"]["tier"],
            (await client.get(f"/v1/members/{member}/tier")).json()["code"], summary["member"]["tier"],
            summary["tier"]["code"]} == {first}
    r = await client.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"member_id": member},
                          headers={"Idempotency-Key": f.new_key()})
    f.assert_problem(r, 422, "member_not_in_audience")
