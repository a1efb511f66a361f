"""Personalization through HTTP: segments from a back-dated history, lifecycle over time (``loyalty sweep
--as-of``), greetings (every occasion and their priority, both built-in locales, the program's own templates),
ranked offers with audience filtering, nudges, the birthday bonus (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests import factories as f
from tests.server import run_cli

NOW = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)  # 12:00 in Berlin, 18:00 in Shanghai


def iso(at: datetime) -> str:
    return at.isoformat()


@pytest.fixture
async def store(client, clock):
    clock.freeze(NOW)
    return (await f.create_store(client, tz="Europe/Berlin"))["id"]


async def buy(client, member, store, amount=1000, at=None, **extra) -> dict:
    body = f.basket(member, store, [f.line(unit_price=amount)], **extra)
    if at is not None:
        body["occurred_at"] = iso(at)
    r = await f.commit(client, body)
    assert r.status_code == 201, r.text
    return r.json()


async def quote(client, member, store, lines=None, **extra) -> dict:
    r = await client.post("/v1/checkout/quote", json=f.basket(member, store, lines, **extra))
    assert r.status_code == 200, r.text
    return r.json()


async def segment(client, member) -> dict:
    r = await client.get(f"/v1/members/{member}/segment")
    assert r.status_code == 200, r.text
    return r.json()


async def report(client) -> dict:
    r = await client.get("/v1/reports/segments")
    assert r.status_code == 200, r.text
    return r.json()


# -- segments ------------------------------------------------------------------------------------------------------


async def test_segment_figures_for_a_back_dated_history(client, store):
    member = (await f.enroll(client))["id"]
    await buy(client, member, store, 10_000, NOW - timedelta(days=400))  # before the window
    await buy(client, member, store, 5_000, NOW - timedelta(days=200))
    await buy(client, member, store, 3_000, NOW - timedelta(days=100))
    last = await buy(client, member, store, 2_000, NOW - timedelta(days=10))
    voided = await buy(client, member, store, 7_000, NOW - timedelta(days=5))
    r = await client.post(f"/v1/checkout/transactions/{voided['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/checkout/transactions/{last['id']}/returns", json={"lines": [
        {"line_id": "1", "quantity": 1}]}, headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text  # the whole 20.00 line comes back: spend falls, the visit counts
    seg = await segment(client, member)
    assert seg == {"quadrant": "barnacle", "lifecycle": "active", "recency_days": 10, "frequency": 3,
                   "monetary": 8_000, "last_purchase_on": (NOW - timedelta(days=10)).date().isoformat()}
    # The window is the 365 days ending today: the 400-day-old sale is out, one 364 days old is in.
    await buy(client, member, store, 4_000, NOW - timedelta(days=364))
    seg = await segment(client, member)
    assert (seg["frequency"], seg["monetary"], seg["quadrant"]) == (4, 12_000, "true_friend")
    await f.set_program(client, segments={"min_frequency": 5, "min_monetary": 20_000})
    assert (await segment(client, member))["quadrant"] == "stranger"
    await f.set_program(client, segments={"min_frequency": 5, "min_monetary": 100})
    assert (await segment(client, member))["quadrant"] == "butterfly"
    summary = (await client.get(f"/v1/members/{member}/summary")).json()
    assert summary["segment"]["quadrant"] == "butterfly" and summary["segment"]["frequency"] == 4


async def test_a_member_who_never_bought(client, store):
    member = (await f.enroll(client))["id"]
    assert await segment(client, member) == {"quadrant": "stranger", "lifecycle": "new", "recency_days": None,
                                             "frequency": 0, "monetary": 0, "last_purchase_on": None}
    r = await client.get("/v1/members/mem_missing/segment")
    f.assert_problem(r, 404, "member_not_found")


async def test_lifecycle_over_time_by_the_sweep(client, store, clock, cli_env):
    regular = (await f.enroll(client))["id"]
    for days in (100, 90, 80):  # a sale every 10 days: at risk after 60 days without one (2 × 10 is less)
        await buy(client, regular, store, 1_000, NOW - timedelta(days=days))
    idle = (await f.enroll(client))["id"]  # enrolled at NOW, never buys
    steps = [(NOW - timedelta(days=85), "new", "new"),  # the regular's first sale was 15 days before
             (NOW - timedelta(days=50), "active", "new"),
             (NOW, "at_risk", "new"),
             (NOW + timedelta(days=45), "at_risk", "active"),
             (NOW + timedelta(days=70), "at_risk", "at_risk"),
             (NOW + timedelta(days=101), "lapsed", "at_risk"),
             (NOW + timedelta(days=181), "lapsed", "lapsed")]
    before = {regular: None, idle: None}
    for i, (as_of, regular_stage, idle_stage) in enumerate(steps):
        assert await run_cli("sweep", "--allow-future", "--as-of", iso(as_of)) == 0
        counts = await report(client)
        expected = {c: 0 for c in ("new", "active", "at_risk", "lapsed")}
        expected[regular_stage] += 1
        expected[idle_stage] += 1
        assert counts["lifecycles"] == expected, (as_of, counts)
        assert counts["as_of"][:10] == as_of.date().isoformat()
        assert counts["members"] == 2 and counts["not_segmented"] == 0 and sum(counts["quadrants"].values()) == 2
        # The movement since the sweep before: who changed lifecycle, from what to what.
        moves: dict[tuple, int] = {}
        for member, stage in ((regular, regular_stage), (idle, idle_stage)):
            if before[member] != stage:
                moves[before[member], stage] = moves.get((before[member], stage), 0) + 1
            before[member] = stage
        movement = counts["movement"]
        assert {(m["from"], m["to"]): m["members"] for m in movement["lifecycles"]} == moves, (as_of, movement)
        assert movement["since"] == (None if i == 0 else iso(steps[i - 1][0]).replace("+00:00", "Z"))
        if i == 0:  # the first sweep: every quadrant is a first one
            assert [m["from"] for m in movement["quadrants"]] == [None] * len(movement["quadrants"])
            assert sum(m["members"] for m in movement["quadrants"]) == 2
    # The sweep is idempotent: the same as-of gives the same counts, and the same movement.
    assert await run_cli("sweep", "--allow-future", "--as-of", iso(NOW + timedelta(days=181))) == 0
    again = await report(client)
    assert again["lifecycles"]["lapsed"] == 2
    assert again["movement"] == movement
    # The report is the sweep's picture; a member read is judged now (the clock is at NOW).
    assert (await segment(client, idle))["lifecycle"] == "new"
    assert (await segment(client, regular))["lifecycle"] == "at_risk"
    await f.enroll(client)
    assert (await report(client))["not_segmented"] == 1


async def test_the_sweep_sets_thresholds_at_the_medians(client, store, cli_env):
    members = [(await f.enroll(client))["id"] for _ in range(4)]
    for i, member in enumerate(members):  # 1, 2, 3, 4 sales of 10.00 × (i + 1)
        for n in range(i + 1):
            await buy(client, member, store, 1_000 * (i + 1), NOW - timedelta(days=20 + n))
    assert await run_cli("sweep", "--allow-future", "--as-of", iso(NOW)) == 0
    counts = await report(client)
    # (sales, spend): (1, 10.00), (2, 40.00), (3, 90.00), (4, 160.00); medians 2.5 and 65.00: frequent from 3
    # sales, high from 65.01
    assert counts["thresholds"] == {"min_frequency": 3, "min_monetary": 6_501, "source": "sweep"}
    assert counts["quadrants"] == {"true_friend": 2, "butterfly": 0, "barnacle": 0, "stranger": 2}
    assert (await segment(client, members[3]))["quadrant"] == "true_friend"


# -- greetings -----------------------------------------------------------------------------------------------------


async def test_occasions_and_their_priority(client, store, clock):
    # welcome: no purchase yet; the salutation follows the store's clock (12:00 in Berlin)
    newcomer = await f.enroll(client, name="Ann")
    q = await quote(client, newcomer["id"], store)
    assert q["greeting"] == {"text": "Good afternoon, Ann! Welcome, and thank you for joining.", "locale": "en",
                             "occasion": "welcome"}
    # birthday (± 3 days) beats welcome, and a tier upgrade
    birthday = (NOW + timedelta(days=3)).date().replace(year=1990)
    celebrant = (await f.enroll(client, name="Bo", birthday=birthday.isoformat()))["id"]
    assert (await quote(client, celebrant, store))["greeting"]["occasion"] == "birthday"
    await buy(client, celebrant, store, 60_000)  # silver now
    q = await quote(client, celebrant, store)
    assert q["greeting"] == {"text": "Good afternoon, Bo! Happy birthday!", "locale": "en", "occasion": "birthday"}
    clock.freeze(NOW + timedelta(days=7))
    assert (await quote(client, celebrant, store))["greeting"]["occasion"] == "tier_upgrade"
    # welcome back: the upgrading sale is voided (the upgrade goes with it), the last one left is 100 days old
    clock.freeze(NOW)
    upgraded = (await f.enroll(client, name="Cy"))["id"]
    await buy(client, upgraded, store, 1_000, NOW - timedelta(days=100))
    big = await buy(client, upgraded, store, 60_000, NOW - timedelta(days=10))
    assert big["tier_change"] == {"from": "member", "to": "silver"}
    q = await quote(client, upgraded, store)
    assert q["greeting"]["occasion"] == "tier_upgrade" and q["greeting"]["text"].endswith("Welcome to Silver!")
    r = await client.post(f"/v1/checkout/transactions/{big['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200
    assert (await segment(client, upgraded))["lifecycle"] == "at_risk"
    q = await quote(client, upgraded, store)
    assert q["greeting"] == {"text": "Good afternoon, Cy! Welcome back, we missed you.", "locale": "en",
                             "occasion": "welcome_back"}
    # welcome back beats a milestone: nine sales, long ago; the next visit would be the 10th
    clock.freeze(NOW)
    loyal = (await f.enroll(client, name="Di"))["id"]
    for days in range(200, 191, -1):
        await buy(client, loyal, store, 1_000, NOW - timedelta(days=days))
    assert (await quote(client, loyal, store))["greeting"]["occasion"] == "welcome_back"
    await buy(client, loyal, store)  # the 10th visit
    assert (await quote(client, loyal, store))["greeting"]["occasion"] == "regular"
    # milestone: the 10th visit of an active member
    steady = (await f.enroll(client, name="Ed"))["id"]
    for days in range(9, 0, -1):
        await buy(client, steady, store, 1_000, NOW - timedelta(days=days))
    q = await quote(client, steady, store)
    assert q["greeting"] == {"text": "Good afternoon, Ed! This is your visit number 10: thank you!", "locale": "en",
                             "occasion": "milestone"}
    await buy(client, steady, store)
    assert (await quote(client, steady, store))["greeting"]["text"] == "Good afternoon, Ed!"


async def test_a_zh_cn_member_is_greeted_in_chinese_in_the_stores_time(client, store):
    shanghai = (await f.create_store(client, tz="Asia/Shanghai"))["id"]
    member = (await f.enroll(client, name="李雷", locale="zh-CN"))["id"]
    q = await quote(client, member, shanghai)  # 18:00 in Shanghai
    assert q["greeting"] == {"text": "李雷，晚上好！欢迎您，感谢加入。", "locale": "zh-CN", "occasion": "welcome"}
    await buy(client, member, shanghai, 1_000, NOW - timedelta(days=1))
    q = await quote(client, member, store)  # 12:00 in Berlin
    assert q["greeting"] == {"text": "李雷，下午好！", "locale": "zh-CN", "occasion": "regular"}
    # the offers and nudges speak Chinese too
    assert q["nudges"][0]["kind"] == "tier" and q["nudges"][0]["text"].startswith("再消费")
    assert any(o["kind"] == "points" and o["title"] == "积分抵扣" for o in q["offers"])
    for locale, expected in (("zh", "zh-CN"), ("fr", "en"), ("EN-gb", "en")):
        other = (await f.enroll(client, name="X", locale=locale))["id"]
        assert (await quote(client, other, store))["greeting"]["locale"] == expected


async def test_the_programs_own_templates(client, store):
    await f.set_program(client, greetings={
        "en": {"regular": "Hi {name} ({tier}), {salutation}! {unknown}"},
        "de": {"welcome": "{salutation}, {name}! Willkommen!", "afternoon": "Guten Tag"}})
    german = (await f.enroll(client, name="Udo", locale="de"))["id"]
    assert (await quote(client, german, store))["greeting"] == {"text": "Guten Tag, Udo! Willkommen!",
                                                                "locale": "de", "occasion": "welcome"}
    await buy(client, german, store, 1_000, NOW - timedelta(days=1))
    q = await quote(client, german, store)  # the program has no German "regular": the English one, overridden
    assert q["greeting"] == {"text": "Hi Udo (Member), Guten Tag! {unknown}", "locale": "de", "occasion": "regular"}


async def test_a_program_template_under_a_lower_case_locale_overrides_the_built_in_one(client, store):
    """Locales are case-insensitive: the program's `zh-cn` template is the built-in `zh-CN`'s override, kept as
    `zh-CN`. It was a locale of its own, filled from English, and Chinese members were matched to it: greeted
    ("Good afternoon") and offered in English. Two spellings of one locale in one program are refused."""
    program = await f.set_program(client, greetings={"zh-cn": {"birthday": "{name}，生日快乐！"}})
    assert program["greetings"] == {"zh-CN": {"birthday": "{name}，生日快乐！"}}
    member = (await f.enroll(client, name="王芳", locale="zh-CN"))["id"]
    q = await quote(client, member, store)
    assert q["greeting"] == {"text": "王芳，下午好！欢迎您，感谢加入。", "locale": "zh-CN", "occasion": "welcome"}
    assert q["nudges"][0]["text"].startswith("再消费")
    program["greetings"] = {"zh-CN": {"regular": "{name}"}, "ZH-cn": {"regular": "{name}!"}}
    r = await client.put("/v1/program", json=program)
    assert "ZH-cn and zh-CN are one locale" in f.assert_problem(r, 422, "validation_error")["detail"], r.text


# -- offers and nudges ---------------------------------------------------------------------------------------------


async def test_offers_are_ranked_and_campaigns_filtered_by_audience(client, store, make_client):
    program = (await client.post("/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 1,
        "reward": {"categories": ["coffee"], "max_value": 600}, "reward_valid_days": 30})).json()
    window = {"starts_at": iso(NOW - timedelta(days=1)), "ends_at": iso(NOW + timedelta(days=6))}
    await f.set_program(client, earn={"bonus_events": [
        {"name": "Gold week", "multiplier": 2, "segments": ["gold"], **window},
        {"name": "Come back", "multiplier": 3, "segments": ["lapsed", "at_risk"], **window},
        {"name": "Tea time", "multiplier": 2, "categories": ["tea"], **window},
        {"name": "Last month", "multiplier": 5, "starts_at": iso(NOW - timedelta(days=40)),
         "ends_at": iso(NOW - timedelta(days=10))}]})
    member = (await f.enroll(client))["id"]
    await buy(client, member, store, 150_000, NOW - timedelta(days=2))  # gold, 1500 points
    await f.commit(client, f.basket(member, store, [f.line("c", "LATTE", "coffee", 1, 400)]))  # a reward
    q = await quote(client, member, store, [f.line("c", "LATTE", "coffee", 1, 400), f.line("t", "TEA", "tea", 1, 600)])
    kinds = [(o["kind"], o.get("id") if o["kind"] != "punch_reward" else "reward") for o in q["offers"]]
    assert kinds == [("punch_reward", "reward"), ("points", None), ("tier_discount", "gold"),
                     ("campaign", "Gold week"), ("campaign", "Tea time")], kinds
    reward, points, tier, gold_week, tea = q["offers"]
    assert reward["applicable"] and reward["value"] == 400 and reward["id"].startswith("rwd_")
    assert points["applicable"] and points["points"] == 950 and points["value"] == 950  # 10.00 less 5% gold
    assert tier["value"] == 50 and tier["description"] == "5% off as a Gold member"
    # the extra points the event adds to what this basket earns (9.50 after the gold 5 % off; gold earns 1.5×):
    # 28 with the Gold week (28.5 floored), 14 without; Tea time doubles only the tea, which the Gold week, listed
    # first, already doubles (events do not stack)
    assert gold_week["value"] == 14 and (tea["value"], tea["applicable"]) == (0, False)
    assert tea["reason"] == "A larger bonus applies to this basket: Tea time adds nothing to it."
    assert gold_week["ends_at"].startswith((NOW + timedelta(days=6)).date().isoformat())
    # a basket with nothing for a campaign or a reward: those offers rank after the ones that apply
    q = await quote(client, member, store, [f.line("x", "BREAD", "bakery", 1, 300)])
    assert [o["kind"] for o in q["offers"]] == ["points", "tier_discount", "punch_reward", "campaign", "campaign"]
    assert q["offers"][2]["applicable"] is False and "Coffee card" in q["offers"][2]["reason"]
    tea = next(o for o in q["offers"] if o.get("id") == "Tea time")
    assert tea["applicable"] is False and tea["value"] == 0
    # the app sees the same offers without a basket; a till may not ask
    app = make_client(await f.create_key(client, "app"))
    r = await app.get(f"/v1/members/{member}/offers")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [o["kind"] for o in body["offers"]] == ["punch_reward", "points", "tier_discount", "campaign", "campaign"]
    assert body["offers"][1]["points"] == 1_511 and all(o["applicable"] for o in body["offers"])  # 1500 + 3.80 × 3
    assert body["nudges"] == [{"kind": "punch_card", "text": "1 more stamp to a free item on the Coffee card",
                               "program_id": program["id"], "missing": 1}]
    pos = make_client(await f.create_key(client, "pos", store))
    assert (await pos.get(f"/v1/members/{member}/offers")).status_code == 403
    # a lapsed member is offered the come-back campaign instead
    gone = (await f.enroll(client))["id"]
    await buy(client, gone, store, 1_000, NOW - timedelta(days=200))
    offers = (await client.get(f"/v1/members/{gone}/offers")).json()["offers"]
    assert [o["id"] for o in offers if o["kind"] == "campaign"] == ["Come back", "Tea time"]


async def test_the_points_offer_is_what_the_commit_accepts_after_the_vouchers_redeemed(client, store):
    """The points offer ("use up to N points") is capped as the commit caps a burn: on the net after the punch
    rewards, the tier discount and the vouchers the request redeems (DESIGN §4 steps 1-3), so the till can read it
    out and commit it. It was capped after the tier discount only: 1,000 points offered, 422 at the commit."""
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 5_000)
    five_off = (await client.post("/v1/voucher-campaigns", json={"name": "Five off", "kind": "amount_off",
                                                                 "value": 500})).json()
    r = await client.post(f"/v1/voucher-campaigns/{five_off['id']}/vouchers", json={"member_id": member},
                          headers={"Idempotency-Key": f.new_key()})
    code = r.json()[0]["code"]
    lines = [f.line(unit_price=1_000)]
    q = await quote(client, member, store, lines, redeem={"vouchers": [code]})
    offer = next(o for o in q["offers"] if o["kind"] == "points")
    assert (offer["points"], offer["value"], offer["applicable"]) == (500, 500, True), offer
    r = await f.commit(client, f.basket(member, store, lines, redeem={"vouchers": [code], "points": offer["points"]}))
    assert r.status_code == 201, (offer, r.text)
    assert r.json()["totals"]["net"] == 0


async def test_a_bonus_event_outdone_by_a_larger_one_is_offered_as_adding_nothing(client, store):
    """Of several bonus events on a line the largest applies (README, Earning), and a campaign offer is valued
    as the points it adds to this basket. With a 3× and a 2× event running on everything the 2× one adds nothing
    to a 10.00 basket: it was offered as worth 10 points, and applicable."""
    window = {"starts_at": iso(NOW - timedelta(days=1)), "ends_at": iso(NOW + timedelta(days=1))}
    await f.set_program(client, earn={"bonus_events": [{"name": "Double", "multiplier": 2, **window},
                                                       {"name": "Triple", "multiplier": 3, **window}]})
    member = (await f.enroll(client))["id"]
    q = await quote(client, member, store, [f.line(unit_price=1_000)])
    assert q["earn"]["points"] == 30
    offers = {o["id"]: o for o in q["offers"] if o["kind"] == "campaign"}
    assert (offers["Triple"]["value"], offers["Triple"]["applicable"]) == (20, True)
    assert (offers["Double"]["value"], offers["Double"]["applicable"]) == (0, False), offers["Double"]
    assert offers["Double"]["reason"] == "A larger bonus applies to this basket: Double adds nothing to it."
    assert [o["id"] for o in q["offers"] if o["kind"] == "campaign"] == ["Triple", "Double"]


async def test_a_bonus_event_is_offered_as_the_points_it_adds_to_what_the_sale_earns(client, store):
    """A sale earns on its net after every discount (DESIGN §4), so a campaign offer is valued there too. A 2×
    event on a 20.00 basket with a 5.00 voucher adds 15 points: it was offered as 20, the lines before any
    discount."""
    five_off = (await client.post("/v1/voucher-campaigns", json={"name": "Five off", "kind": "amount_off",
                                                                 "value": 500})).json()
    member = (await f.enroll(client))["id"]
    r = await client.post(f"/v1/voucher-campaigns/{five_off['id']}/vouchers", json={"member_id": member},
                          headers={"Idempotency-Key": f.new_key()})
    code = r.json()[0]["code"]
    lines, redeem = [f.line(unit_price=2_000)], {"vouchers": [code]}
    without = await quote(client, member, store, lines, redeem=redeem)
    window = {"starts_at": iso(NOW - timedelta(days=1)), "ends_at": iso(NOW + timedelta(days=1))}
    await f.set_program(client, earn={"bonus_events": [{"name": "Double", "multiplier": 2, **window}]})
    q = await quote(client, member, store, lines, redeem=redeem)
    assert (without["earn"]["points"], q["earn"]["points"]) == (15, 30)
    [offer] = [o for o in q["offers"] if o["kind"] == "campaign"]
    assert (offer["value"], offer["applicable"]) == (15, True), offer


async def test_a_bonus_event_is_offered_as_what_the_sale_earns_with_it_over_without_it(client, store):
    """A point per 1.00 and a 2x event: a line of 0.50 earns 1 point with the event and 0 without, a line of 1.50
    3 and 1. Each event's extra floored on its own (0.50 and 1.50), the offer said the first added nothing (not
    applicable) and the second 1 point."""
    window = {"starts_at": iso(NOW - timedelta(days=1)), "ends_at": iso(NOW + timedelta(days=1))}
    await f.set_program(client, earn={"bonus_events": [{"name": "Double", "multiplier": 2, **window}]})
    member = (await f.enroll(client))["id"]
    for price, points, added in ((50, 1, 1), (150, 3, 2)):
        q = await quote(client, member, store, [f.line(unit_price=price)])
        [offer] = [o for o in q["offers"] if o["kind"] == "campaign"]
        assert (q["earn"]["points"], offer["value"], offer["applicable"]) == (points, added, True), offer


async def test_the_apps_points_offer_is_not_applicable_when_points_may_pay_for_nothing(client, store):
    """With max_burn_percent 0 every burn is refused (422 points_over_limit); the app's points offer said "use up
    to 800 points, worth 8.00", applicable. It now offers none, with the till's reason."""
    await f.set_program(client, max_burn_percent=0)
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 800)
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=5_000)], points=1))
    assert f.assert_problem(r, 422, "points_over_limit")["max_points"] == 0
    app = (await client.get(f"/v1/members/{member}/offers")).json()["offers"]
    till = (await quote(client, member, store, [f.line(unit_price=5_000)]))["offers"]
    for offers in (app, till):
        offer = next(o for o in offers if o["kind"] == "points")
        assert (offer["points"], offer["value"], offer["applicable"]) == (0, 0, False), offer
        assert offer["reason"] == "Points cannot pay for this basket."


async def test_nudges_stamps_tier_and_expiring_points(client, store, clock):
    await client.post("/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 3,
        "reward": {"categories": ["coffee"]}, "reward_valid_days": 30})
    member = (await f.enroll(client))["id"]
    await f.commit(client, f.basket(member, store, [f.line("c", "LATTE", "coffee", 1, 400)]))
    await f.adjust(client, member, 70)
    clock.freeze(NOW + timedelta(days=340))  # the 70 points expire 12 months after NOW
    q = await quote(client, member, store)
    expiry = f"{(NOW + timedelta(days=365)).date()} 12:00"  # the hour they end, on the store's (Berlin) clock
    assert q["nudges"] == [
        {"kind": "punch_card", "text": "2 more stamps to a free item on the Coffee card",
         "program_id": q["nudges"][0]["program_id"], "missing": 2},
        {"kind": "tier", "text": "Spend 496.00 USD more to reach Silver", "tier": "Silver", "amount": 49_600},
        {"kind": "points_expiry", "text": f"74 points expire on {expiry}", "points": 74,
         "expires_at": q["nudges"][2]["expires_at"]},
    ]
    clock.freeze(NOW + timedelta(days=300))  # more than 30 days before: no expiry nudge
    assert [n["kind"] for n in (await quote(client, member, store))["nudges"]] == ["punch_card", "tier"]


# -- the birthday bonus --------------------------------------------------------------------------------------------


async def test_birthday_bonus_once_a_year_in_the_birthday_week(client, app, store, clock):
    await f.set_program(client, birthday_bonus={"points": 200})
    birthday = date(1990, NOW.month, NOW.day) + timedelta(days=2)
    member = (await f.enroll(client, birthday=birthday.isoformat()))["id"]
    outside = (await f.enroll(client, birthday=(birthday + timedelta(days=10)).isoformat()))["id"]
    assert (await buy(client, outside, store, 1_000))["balances_after"]["points"] == 10
    first = await buy(client, member, store, 1_000)
    assert first["balances_after"]["points"] == 210  # 10 earned + 200
    ledger = (await client.get(f"/v1/members/{member}/ledger")).json()["data"]
    assert sorted(e["kind"] for e in ledger) == ["birthday_bonus", "earn"]
    assert (await buy(client, member, store, 1_000))["balances_after"]["points"] == 220  # once a year
    # the void of the sale that carried it takes it back; the next sale in the week brings it again
    r = await client.post(f"/v1/checkout/transactions/{first['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.json()["balances_after"]["points"] == 10
    again = await buy(client, member, store, 1_000)
    assert again["balances_after"]["points"] == 220
    # a retried commit (same key, same body) is answered from the first answer: no second bonus
    body = {**f.basket(member, store), "receipt_id": "retry-1"}
    key = f.new_key()
    for _ in range(2):
        r = await client.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": key})
        assert r.status_code == 201 and r.json()["balances_after"]["points"] == 230
    # next year's birthday week: once more
    clock.freeze(NOW + timedelta(days=365))
    year = await buy(client, member, store, 1_000)
    assert year["balances_after"]["points"] == 440
    # returning everything of that sale takes its bonus back too, as a void does; the next sale brings it again
    r = await f.return_lines(client, year["id"], {"1": 1})
    assert r.status_code == 201 and r.json()["reversed"]["points"] == 210, r.text
    assert (await buy(client, member, store, 1_000))["balances_after"]["points"] == 440
    await f.verify_ledger(app)


async def test_a_sale_entered_late_from_an_earlier_birthday_week_pays_no_bonus_twice(client, app, store):
    """Only the last year paid is kept: a backdated sale from last year's birthday week paid 2025's bonus and
    wrote 2025 over 2026, and the next sale this week paid 2026's a second time. A year before the last one paid
    now pays nothing (an admin's adjustment can make good a bonus that a late sale would have paid)."""
    await f.set_program(client, birthday_bonus={"points": 200})
    birthday = date(1990, NOW.month, NOW.day) + timedelta(days=1)
    member = (await f.enroll(client, birthday=birthday.isoformat()))["id"]
    assert (await buy(client, member, store, 1_000))["balances_after"]["points"] == 210
    assert (await buy(client, member, store, 1_000, at=NOW - timedelta(days=365)))["balances_after"]["points"] == 220
    assert (await buy(client, member, store, 1_000))["balances_after"]["points"] == 230
    ledger = (await client.get(f"/v1/members/{member}/ledger")).json()["data"]
    assert [e["kind"] for e in ledger].count("birthday_bonus") == 1
    await f.verify_ledger(app)


async def test_the_birthday_week_starts_and_ends_at_midnight_on_the_stores_calendar(client, app, store, clock):
    """Birthday 20 June: the week is 17 to 23 June at the store. At 01:30 on 17 June in Shanghai it is still 16 June
    in Berlin (and in UTC), and at 00:30 on 24 June in Shanghai still 23 June in Berlin: the same instant pays the
    bonus at one store and not at the other."""
    await f.set_program(client, birthday_bonus={"points": 200})
    shanghai = (await f.create_store(client, tz="Asia/Shanghai"))["id"]
    birthday = date(1990, 6, 20).isoformat()
    early, late = [(await f.enroll(client, birthday=birthday))["id"] for _ in range(2)]
    clock.freeze(datetime(2026, 6, 16, 17, 30, tzinfo=UTC))
    assert (await quote(client, early, store))["earn"]["bonus_points"] == 0
    assert (await buy(client, early, store))["earned"]["bonus_points"] == 0  # 19:30 on 16 June in Berlin
    assert (await quote(client, early, shanghai))["greeting"]["occasion"] == "birthday"
    assert (await buy(client, early, shanghai))["earned"]["bonus_points"] == 200  # 01:30 on 17 June
    clock.freeze(datetime(2026, 6, 23, 16, 30, tzinfo=UTC))
    assert (await buy(client, late, shanghai))["earned"]["bonus_points"] == 0  # 00:30 on 24 June
    assert (await buy(client, late, store))["earned"]["bonus_points"] == 200  # 18:30 on 23 June in Berlin
    await f.verify_ledger(app)


async def test_voiding_this_years_birthday_bonus_does_not_reopen_last_years(client, app, store):
    """2025's bonus paid, then 2026's: voiding the 2026 sale makes 2026's due again, and only 2026's. The void
    forgot every year paid, so a sale entered late from the 2025 birthday week paid 2025's bonus a second time."""
    await f.set_program(client, birthday_bonus={"points": 200})
    birthday = date(1990, NOW.month, NOW.day) + timedelta(days=1)
    member = (await f.enroll(client, birthday=birthday.isoformat()))["id"]
    assert (await buy(client, member, store, 1_000, at=NOW - timedelta(days=365)))["balances_after"]["points"] == 210
    this_year = await buy(client, member, store, 1_000)
    assert this_year["balances_after"]["points"] == 420
    assert (await f.void(client, this_year["id"])).json()["balances_after"]["points"] == 210
    late = await buy(client, member, store, 1_000, at=NOW - timedelta(days=364))  # the 2025 week, entered late
    assert (late["earned"]["bonus_points"], late["balances_after"]["points"]) == (0, 220)
    again = await buy(client, member, store, 1_000)  # 2026's is due again
    assert (again["earned"]["bonus_points"], again["balances_after"]["points"]) == (200, 430)
    ledger = (await client.get(f"/v1/members/{member}/ledger", params={"limit": 500})).json()["data"]
    assert sum(e["amount"] for e in ledger if e["kind"] == "birthday_bonus") == 200 * 3  # 2025, 2026, 2026 again
    await f.verify_ledger(app)


async def test_the_quote_and_the_receipt_tell_the_birthday_bonus_beside_the_lines_points(client, store):
    """The cashier reads out what the sale credits: the quote's `earn.points` and the receipt's `earned.points`
    are the lines' points (returns count from them), and said 10 in the birthday week while the balance moved by
    210. `bonus_points` tells the 200 beside them, on the quote, the receipt, and the receipt read again."""
    await f.set_program(client, birthday_bonus={"points": 200})
    member = (await f.enroll(client, birthday=date(1990, NOW.month, NOW.day).isoformat()))["id"]
    q = await quote(client, member, store, [f.line(unit_price=1_000)])
    assert q["greeting"]["occasion"] == "birthday"
    assert (q["earn"]["points"], q["earn"]["bonus_points"]) == (10, 200)
    sale = await buy(client, member, store, 1_000)
    earned = sale["earned"]
    assert (earned["points"], earned["bonus_points"], sale["balances_after"]["points"]) == (10, 200, 210)
    assert (await client.get(f"/v1/checkout/transactions/{sale['id']}")).json() == sale
    # paid once a year: the next quote and sale in the week tell none
    assert (await quote(client, member, store, [f.line(unit_price=1_000)]))["earn"]["bonus_points"] == 0
    assert (await buy(client, member, store, 1_000))["earned"]["bonus_points"] == 0
    # a void's answer is the receipt as committed (the bonus it carried), with the balances the void left
    r = await client.post(f"/v1/checkout/transactions/{sale['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.json()["earned"]["bonus_points"] == 200 and r.json()["balances_after"]["points"] == 10
    assert (await quote(client, member, store, [f.line(unit_price=1_000)]))["earn"]["bonus_points"] == 200
