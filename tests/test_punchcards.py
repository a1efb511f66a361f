"""Punch cards through HTTP: programs, stamps, rewards at the till, voids, returns, expiry (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests import factories as f


async def make_program(client, **changes) -> dict:
    body = {"name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 10,
            "reward": {"categories": ["coffee"], "max_value": 600}, "reward_valid_days": 30, **changes}
    r = await client.post("/v1/punch-card-programs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def coffee(line_id: str = "c", quantity: int = 1, unit_price: int = 400, sku: str = "LATTE") -> dict:
    return f.line(line_id, sku, "coffee", quantity, unit_price)


async def card(client, member: str, program_id: str) -> dict:
    r = await client.get(f"/v1/members/{member}/punch-cards")
    assert r.status_code == 200, r.text
    return next(c for c in r.json()["data"] if c["program_id"] == program_id)


async def buy(client, member, store, lines, rewards=None) -> dict:
    extra = {"redeem": {"punch_rewards": rewards}} if rewards else {}
    r = await f.commit(client, f.basket(member, store, lines, **extra))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
async def shop(client):
    store = await f.create_store(client)
    member = await f.enroll(client)
    return store["id"], member["id"]


async def test_a_receipt_reads_back_with_its_rewards_in_the_order_the_commit_listed_them(client, shop):
    """A sale that issues several rewards (and threshold vouchers) lists them in one order, by id, when committed
    and when read again: the receipt is the same document either way."""
    store, member = shop
    program = await make_program(client, stamps_required=1)
    for name in ("Spend 10", "Spend 20"):
        r = await client.post("/v1/voucher-campaigns", json={"name": name, "kind": "amount_off", "value": 100,
                                                             "auto_issue": {"spend_threshold": 1000}})
        assert r.status_code == 201, r.text
    sale = await buy(client, member, store, [coffee(quantity=6)])
    assert len(sale["earned"]["rewards_issued"]) == 6 and len(sale["earned"]["vouchers_issued"]) == 2
    assert {r["program_id"] for r in sale["earned"]["rewards_issued"]} == {program["id"]}
    ids = [r["id"] for r in sale["earned"]["rewards_issued"]]
    assert ids == sorted(ids)
    assert (await client.get(f"/v1/checkout/transactions/{sale['id']}")).json() == sale


async def test_program_crud_and_validation(client, make_client):
    program = await make_program(client)
    assert program["id"].startswith("pcp_") and program["active"] is True  # API.md: programmes are `pcp_…`
    assert program["qualifying"] == {"skus": [], "categories": ["coffee"]}
    assert program["reward"] == {"skus": [], "categories": ["coffee"], "max_value": 600}
    assert (await client.get(f"/v1/punch-card-programs/{program['id']}")).json() == program
    listed = (await client.get("/v1/punch-card-programs")).json()
    assert [p["id"] for p in listed["data"]] == [program["id"]]
    body = {k: v for k, v in program.items() if k != "id"} | {"active": False, "stamps_required": 8}
    r = await client.put(f"/v1/punch-card-programs/{program['id']}", json=body)
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["stamps_required"] == 8
    r = await client.get("/v1/punch-card-programs/pcp_nope")
    assert r.status_code == 404 and r.json()["code"] == "punch_program_not_found"
    for bad in ({"qualifying": {}}, {"stamps_required": 0}, {"reward_valid_days": 0},
                {"reward": {"max_value": -1}}, {"active": "T"}, {"active": 1}):  # a boolean, not a word or number
        r = await client.post("/v1/punch-card-programs", json={**body, **bad})
        assert r.status_code == 422, (bad, r.text)
    pos = make_client(await f.create_key(client, "pos", (await f.create_store(client))["id"]))
    assert (await pos.post("/v1/punch-card-programs", json=body)).status_code == 403


async def test_ten_single_purchases_issue_a_reward_and_nudges_come_near_the_end(client, app, shop):
    store, member = shop
    program = await make_program(client)
    for _ in range(8):
        t = await buy(client, member, store, [coffee(), f.line("x", "MUFFIN", "bakery", 1, 300)])
        assert t["earned"]["stamps"] == [{"program_id": program["id"], "stamps": 1}]
        assert t["earned"]["rewards_issued"] == []
    assert (await card(client, member, program["id"]))["stamps"] == 8
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [coffee()]))).json()
    assert q["earn"]["stamps"] == [{"program_id": program["id"], "stamps": 1}]
    assert {"kind": "punch_card", "text": "2 more stamps to a free item on the Coffee card",
            "program_id": program["id"], "missing": 2} in q["nudges"]
    await buy(client, member, store, [coffee()])
    t = await buy(client, member, store, [coffee()])
    [reward] = t["earned"]["rewards_issued"]
    assert reward["program_id"] == program["id"]
    c = await card(client, member, program["id"])
    assert c["stamps"] == 0 and c["stamps_required"] == 10 and c["name"] == "Coffee card"
    assert c["rewards"] == [{"id": reward["id"], "status": "available", "expires_at": c["rewards"][0]["expires_at"]}]
    got = await client.get(f"/v1/checkout/transactions/{t['id']}")
    assert got.json()["earned"]["rewards_issued"] == [reward]
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [coffee()]))).json()
    offer = next(o for o in q["offers"] if o["kind"] == "punch_reward")
    assert offer["id"] == reward["id"] and offer["applicable"] and offer["value"] == 400
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line()]))).json()
    offer = next(o for o in q["offers"] if o["kind"] == "punch_reward")
    assert not offer["applicable"] and offer["value"] == 0 and offer["reason"]
    await f.verify_ledger(app)


async def test_carry_over_and_two_programs_stamped_by_one_basket(client, app, shop):
    store, member = shop
    coffee_card = await make_program(client)
    sandwich = await make_program(client, name="Sandwich card", qualifying={"skus": ["CLUB", "BLT"]},
                                  stamps_required=5, reward={})
    # one unit can stamp two programs: a coffee-category SKU named by the sandwich card too
    t = await buy(client, member, store, [coffee(quantity=12), f.line("s", "CLUB", "food", 2, 700),
                                          coffee("b", 1, 500, sku="BLT")])
    assert t["earned"]["stamps"] == sorted([{"program_id": coffee_card["id"], "stamps": 13},
                                            {"program_id": sandwich["id"], "stamps": 3}],
                                           key=lambda s: s["program_id"])
    assert [r["program_id"] for r in t["earned"]["rewards_issued"]] == [coffee_card["id"]]
    assert (await card(client, member, coffee_card["id"]))["stamps"] == 3
    assert (await card(client, member, sandwich["id"]))["stamps"] == 3
    t = await buy(client, member, store, [f.line("s", "BLT", "food", 12, 700)])
    assert len(t["earned"]["rewards_issued"]) == 3  # 3 + 12 = 15 stamps: three rewards, nothing left over
    assert (await card(client, member, sandwich["id"]))["stamps"] == 0
    await f.verify_ledger(app)


async def test_redeem_frees_the_cheapest_eligible_unit_which_earns_no_stamp(client, app, shop):
    store, member = shop
    program = await make_program(client, stamps_required=2)
    reward = (await buy(client, member, store, [coffee(quantity=2)]))["earned"]["rewards_issued"][0]["id"]
    lines = [coffee("a", 2, 450), coffee("b", 1, 900, sku="MOCHA"), f.line("x", "MUFFIN", "bakery", 1, 200)]
    body = f.basket(member, store, lines, redeem={"punch_rewards": [reward]})
    q = (await client.post("/v1/checkout/quote", json=body)).json()
    assert q["applied"][0] == {"kind": "punch_reward", "id": reward, "line_id": "a", "amount": 450, "points": None}
    assert q["earn"]["stamps"] == [{"program_id": program["id"], "stamps": 2}]  # 3 coffees, one of them free
    t = await buy(client, member, store, lines, rewards=[reward])
    assert t["lines"][0] == {"line_id": "a", "discount": 450, "net": 450}
    assert t["earned"]["stamps"] == [{"program_id": program["id"], "stamps": 2}]
    # the cap: a reward takes at most max_value off an expensive unit
    capped = t["earned"]["rewards_issued"][0]["id"]
    t = await buy(client, member, store, [coffee("a", 1, 900, sku="MOCHA")], rewards=[capped])
    assert t["lines"] == [{"line_id": "a", "discount": 600, "net": 300}]
    assert t["earned"]["stamps"] == []
    # used: refused, and nothing is written
    r = await f.commit(client, f.basket(member, store, [coffee()], redeem={"punch_rewards": [reward]}))
    assert r.status_code == 409 and r.json()["code"] == "reward_not_available", r.text
    other = (await f.enroll(client))["id"]
    r = await client.post("/v1/checkout/quote", json=f.basket(other, store, [coffee()],
                                                               redeem={"punch_rewards": [capped]}))
    assert r.status_code == 409 and r.json()["code"] == "reward_not_available"
    assert (await card(client, member, program["id"]))["rewards"][0]["status"] == "redeemed"
    await f.verify_ledger(app)


async def test_one_sale_issues_at_most_fifty_rewards_and_the_next_sales_the_rest(client, app, shop):
    """A card of one stamp and a line of 5,000 coffees issued 5,000 rewards, a row and an event each, inside the
    till's request (a million units, within every bound, would have held the till for minutes)."""
    store, member = shop
    program = await make_program(client, stamps_required=1)
    r = await f.commit(client, f.basket(member, store, [coffee(quantity=5_000, unit_price=1)]))
    assert r.status_code == 201, r.text
    assert len(r.json()["earned"]["rewards_issued"]) == 50
    assert (await card(client, member, program["id"]))["stamps"] == 4_950
    r = await f.commit(client, f.basket(member, store, [f.line("t", "TEA", "tea", 1, 100)]))
    assert r.status_code == 201, r.text  # a sale that stamps nothing turns no stamps into rewards
    r = await f.commit(client, f.basket(member, store, [coffee(unit_price=1)]))
    assert len(r.json()["earned"]["rewards_issued"]) == 50
    assert (await card(client, member, program["id"]))["stamps"] == 4_901
    await f.verify_ledger(app)


async def test_a_unit_priced_at_nothing_earns_no_stamp_and_takes_no_reward(client, app, shop):
    store, member = shop
    program = await make_program(client, stamps_required=1)
    free_refills = await buy(client, member, store, [coffee("r", quantity=10, unit_price=0, sku="REFILL")])
    assert free_refills["earned"]["stamps"] == [] and (await card(client, member, program["id"]))["stamps"] == 0
    reward = (await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"]
    r = await f.commit(client, f.basket(member, store, [coffee("r", unit_price=0, sku="REFILL")],
                                        redeem={"punch_rewards": [reward]}))
    assert r.status_code == 422 and r.json()["code"] == "no_eligible_item", r.text  # not spent on nothing
    assert (await card(client, member, program["id"]))["rewards"][0]["status"] == "available"
    await f.verify_ledger(app)


async def test_no_eligible_unit_is_a_422_and_writes_nothing(client, app, shop):
    store, member = shop
    await make_program(client, stamps_required=1)
    reward = (await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"]
    before = await f.entry_count(app)
    r = await f.commit(client, f.basket(member, store, [f.line()], redeem={"punch_rewards": [reward]}))
    assert r.status_code == 422 and r.json()["code"] == "no_eligible_item", r.text
    assert await f.entry_count(app) == before
    body = f.basket(member, store, [coffee()], redeem={"punch_rewards": [reward, reward]})
    assert (await client.post("/v1/checkout/quote", json=body)).status_code == 422


async def test_void_restores_the_reward_and_removes_the_stamps(client, app, shop):
    store, member = shop
    program = await make_program(client, stamps_required=3)
    reward = (await buy(client, member, store, [coffee(quantity=4)]))["earned"]["rewards_issued"][0]["id"]
    t = await buy(client, member, store, [coffee(quantity=3)], rewards=[reward])
    assert t["earned"]["stamps"] == [{"program_id": program["id"], "stamps": 2}]
    assert (await card(client, member, program["id"]))["stamps"] == 0  # 1 + 2 = 3: a second reward
    r = await client.post(f"/v1/checkout/transactions/{t['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200 and r.json()["status"] == "voided", r.text
    c = await card(client, member, program["id"])
    assert c["stamps"] == 1  # the second reward, unused, is revoked; the voided stamps are gone
    statuses = {rw["id"]: rw["status"] for rw in c["rewards"]}
    assert statuses[reward] == "available"
    assert sorted(statuses.values()) == ["available", "revoked"]
    await f.verify_ledger(app)


async def test_return_revokes_an_unused_reward_or_leaves_a_deficit(client, app, shop):
    store, member = shop
    program = await make_program(client, stamps_required=3)
    t = await buy(client, member, store, [coffee(quantity=3)])
    r = await client.post(f"/v1/checkout/transactions/{t['id']}/returns", json={"lines": [{"line_id": "c",
                                                                                           "quantity": 1}]},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    assert r.json()["reversed"]["stamps"] == [{"program_id": program["id"], "stamps": 1}]
    c = await card(client, member, program["id"])
    assert c["stamps"] == 2 and [rw["status"] for rw in c["rewards"]] == ["revoked"]

    t = await buy(client, member, store, [coffee("d", 1)])  # 3 stamps: a reward again
    reward = t["earned"]["rewards_issued"][0]["id"]
    await buy(client, member, store, [coffee()], rewards=[reward])
    r = await client.post(f"/v1/checkout/transactions/{t['id']}/returns", json={"lines": [{"line_id": "d",
                                                                                           "quantity": 1}]},
                          headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 201, r.text
    assert (await card(client, member, program["id"]))["stamps"] == -1  # the reward was used: a deficit
    t = await buy(client, member, store, [coffee(quantity=3)])
    assert t["earned"]["rewards_issued"] == []  # the deficit is filled first
    assert (await card(client, member, program["id"]))["stamps"] == 2
    await f.verify_ledger(app)


async def edit_program(client, program: dict, **changes) -> dict:
    body = {k: v for k, v in program.items() if k != "id"} | changes
    r = await client.put(f"/v1/punch-card-programs/{program['id']}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_return_after_stamps_required_was_raised_gives_back_what_the_reward_cost(client, app, shop):
    """A reward issued at 5 stamps, the programme raised to 10: returning the whole sale revoked the reward and
    gave back 10 stamps (the programme's figure now), leaving the member 5 stamps from nothing."""
    store, member = shop
    program = await make_program(client, stamps_required=5)
    sale = await buy(client, member, store, [coffee(quantity=5)])
    assert len(sale["earned"]["rewards_issued"]) == 1
    await edit_program(client, program, stamps_required=10)
    r = await f.return_lines(client, sale["id"], {"c": 5})
    assert r.status_code == 201, r.text
    c = await card(client, member, program["id"])
    assert (c["stamps"], [rw["status"] for rw in c["rewards"]]) == (0, ["revoked"])
    await f.verify_ledger(app)


async def test_a_void_after_stamps_required_was_lowered_leaves_no_deficit(client, app, shop):
    """A reward issued at 10 stamps, the programme lowered to 5: voiding the sale gave back 5 stamps for the
    revoked reward, and the card ended at -5 although the whole sale was undone."""
    store, member = shop
    program = await make_program(client, stamps_required=10)
    sale = await buy(client, member, store, [coffee(quantity=10)])
    await edit_program(client, program, stamps_required=5)
    assert (await f.void(client, sale["id"])).status_code == 200
    c = await card(client, member, program["id"])
    assert (c["stamps"], [rw["status"] for rw in c["rewards"]]) == (0, ["revoked"])
    await f.verify_ledger(app)


async def test_a_full_return_after_stamps_required_was_raised_leaves_no_usable_reward(client, app, shop):
    """Two rewards issued at 5 stamps each, the programme raised to 10: returning all ten coffees revoked one
    reward "worth" 10 stamps and left the other usable, a free coffee for a sale entirely returned."""
    store, member = shop
    program = await make_program(client, stamps_required=5)
    sale = await buy(client, member, store, [coffee(quantity=10)])
    assert len(sale["earned"]["rewards_issued"]) == 2
    await edit_program(client, program, stamps_required=10)
    r = await f.return_lines(client, sale["id"], {"c": 10})
    assert r.status_code == 201, r.text
    c = await card(client, member, program["id"])
    assert (c["stamps"], [rw["status"] for rw in c["rewards"]]) == (0, ["revoked", "revoked"])
    await f.verify_ledger(app)


@pytest.mark.parametrize("order", ["earner_first", "user_first"])
async def test_voiding_the_sale_that_earned_a_reward_and_the_sale_that_used_it_ends_alike_in_either_order(
        client, app, shop, order):
    """Voiding the earning sale first left a deficit of 5 (its reward was used), and voiding the using sale then
    gave the reward back as available: a free coffee beside a deficit a member who never buys again never
    repays. The other order revoked the reward. Both orders now end at 0 stamps with the reward revoked."""
    store, member = shop
    program = await make_program(client, stamps_required=5)
    earner = await buy(client, member, store, [coffee(quantity=5)])
    [reward] = earner["earned"]["rewards_issued"]
    user = await buy(client, member, store, [coffee("d", unit_price=300)], rewards=[reward["id"]])
    for sale in ((earner, user) if order == "earner_first" else (user, earner)):
        r = await f.void(client, sale["id"])
        assert r.status_code == 200, r.text
    c = await card(client, member, program["id"])
    assert (c["stamps"], [rw["status"] for rw in c["rewards"]]) == (0, ["revoked"])
    await f.verify_ledger(app)


async def test_a_void_restores_a_used_reward_once_the_card_is_out_of_deficit(client, app, shop):
    """Only a card in deficit takes the reward back as stamps: the earning sale's void leaves -5, later stamps
    fill it, and the using sale's void then gives the reward back as available."""
    store, member = shop
    program = await make_program(client, stamps_required=5)
    earner = await buy(client, member, store, [coffee(quantity=5)])
    [reward] = earner["earned"]["rewards_issued"]
    user = await buy(client, member, store, [coffee("d", unit_price=300)], rewards=[reward["id"]])
    assert (await f.void(client, earner["id"])).status_code == 200
    await buy(client, member, store, [coffee(quantity=6)])  # -5 + 6: the deficit is filled, one stamp over
    assert (await f.void(client, user["id"])).status_code == 200
    c = await card(client, member, program["id"])
    assert (c["stamps"], {rw["id"]: rw["status"] for rw in c["rewards"]}) == (1, {reward["id"]: "available"})
    await f.verify_ledger(app)


async def test_lowering_stamps_required_below_what_a_member_holds_leaves_the_reward_to_the_next_stamp(
        client, app, shop):
    """9 of 10 stamps, the programme lowered to 5: the edit issues nothing (a write to every member's card). The
    card said 9 of 5 with no reward and no nudge; it now lists the reward waiting, the nudge asks for one more
    stamp, a sale stamping nothing issues nothing, and the next stamping sale issues the reward."""
    store, member = shop
    program = await make_program(client, stamps_required=10)
    await buy(client, member, store, [coffee(quantity=9)])
    await edit_program(client, program, stamps_required=5)
    await buy(client, member, store, [f.line("m", "MUFFIN", "bakery", 1, 300)])
    c = await card(client, member, program["id"])
    assert (c["stamps"], c["stamps_required"], c["rewards_waiting"], c["rewards"]) == (9, 5, 1, [])
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line()]))).json()
    assert {"kind": "punch_card", "text": "1 more stamp to a free item on the Coffee card",
            "program_id": program["id"], "missing": 1} in q["nudges"]
    t = await buy(client, member, store, [coffee()])
    assert len(t["earned"]["rewards_issued"]) == 2  # 9 + 1 = 10 stamps: two rewards of 5
    c = await card(client, member, program["id"])
    assert (c["stamps"], c["rewards_waiting"], [rw["status"] for rw in c["rewards"]]) == (0, 0, ["available"] * 2)
    await f.verify_ledger(app)


async def test_rewards_expire_after_their_validity(client, app, shop, clock):
    from service.punchcards import service as punch_service

    store, member = shop
    program = await make_program(client, stamps_required=1, reward_valid_days=7)
    reward = (await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"]
    clock.advance(timedelta(days=7, seconds=1))
    assert (await card(client, member, program["id"]))["rewards"][0]["status"] == "expired"
    r = await f.commit(client, f.basket(member, store, [f.line("z", "TEA", "tea")], redeem={"punch_rewards": [reward]}))
    assert r.status_code == 409 and r.json()["code"] == "reward_not_available"
    async with app.state.db.transaction(write=True) as session:
        assert await punch_service.expire_rewards(session, clock.now(), clock.now()) == 1
    async with app.state.db.transaction(write=True) as session:
        assert await punch_service.expire_rewards(session, clock.now(), clock.now()) == 0
    assert (await card(client, member, program["id"]))["rewards"][0]["status"] == "expired"


async def test_a_backdated_sale_earns_its_reward_as_at_its_time(client, shop, clock):
    """A till back online two days late: the reward's week counts from the sale, as its points' lot does. A sale
    from ten days ago earns a reward whose week is already over, as it would have been at the till."""
    store, member = shop
    program = await make_program(client, stamps_required=1, reward_valid_days=7)
    clock.freeze(clock.now() + timedelta(days=11))  # both sales below came after the programme's start

    async def earned(days_ago: int) -> dict:
        at = clock.now() - timedelta(days=days_ago)
        r = await f.commit(client, f.basket(member, store, [coffee()], occurred_at=at.isoformat()))
        assert r.status_code == 201, r.text
        [reward] = r.json()["earned"]["rewards_issued"]
        return reward

    late = await earned(2)
    assert datetime.fromisoformat(late["expires_at"]) == clock.now() + timedelta(days=5)
    old = await earned(10)
    rewards = {r["id"]: r["status"] for r in (await card(client, member, program["id"]))["rewards"]}
    assert rewards == {late["id"]: "available", old["id"]: "expired"}
    r = await f.commit(client, f.basket(member, store, [f.line("z", "TEA", "tea")],
                                        redeem={"punch_rewards": [old["id"]]}))
    assert r.status_code == 409 and r.json()["code"] == "reward_not_available"


async def test_a_backdated_sale_stamps_only_programmes_that_existed_then(client, shop, clock):
    """A sale sent late or imported stamps as at its time: a programme started after the sale is not filled by it
    (the member's purchases of last year do not fill a card started today), one started before it is."""
    store, member = shop
    clock.freeze(clock.now())
    older = await make_program(client, stamps_required=5)
    clock.advance(timedelta(hours=2))
    newer = await make_program(client, stamps_required=5)
    clock.advance(timedelta(hours=1))
    r = await f.commit(client, f.basket(member, store, [coffee()],
                                        occurred_at=(clock.now() - timedelta(hours=2)).isoformat()))
    assert r.status_code == 201, r.text
    assert r.json()["earned"]["stamps"] == [{"program_id": older["id"], "stamps": 1}]
    r = await f.commit(client, f.basket(member, store, [coffee()]))
    assert r.status_code == 201, r.text
    assert sorted(s["program_id"] for s in r.json()["earned"]["stamps"]) == sorted([older["id"], newer["id"]])
    assert (await card(client, member, older["id"]))["stamps"] == 2
    assert (await card(client, member, newer["id"]))["stamps"] == 1


async def test_an_issued_reward_is_redeemed_on_what_it_was_earned_for_whatever_the_programme_says_now(
        client, app, shop):
    """Editing a programme changes what later sales earn, never what was earned. A reward earned as a coffee up to
    6.00 took 2.00 off a 5.00 coffee once the cap was lowered to 2.00, and was refused on coffee once the reward
    moved to bakery. It keeps its terms; rewards issued after the edit take the new ones."""
    store, member = shop
    program = await make_program(client, stamps_required=1, reward={"categories": ["coffee"], "max_value": 600})
    early = [(await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"] for _ in range(2)]
    body = {k: v for k, v in program.items() if k not in ("id", "active")}
    r = await client.put(f"/v1/punch-card-programs/{program['id']}",
                         json=body | {"reward": {"categories": ["bakery"], "max_value": 200}})
    assert r.status_code == 200, r.text
    later = (await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"]
    q = await client.post("/v1/checkout/quote", json=f.basket(member, store, [coffee("a", 1, 500)]))
    offered = {o["id"]: o["value"] for o in q.json()["offers"] if o["kind"] == "punch_reward"}
    assert (offered[early[0]], offered[later]) == (500, 0), offered
    t = await buy(client, member, store, [coffee("a", 1, 500)], rewards=[early[0]])
    assert (t["lines"][0]["discount"], t["lines"][0]["net"]) == (500, 0), t["lines"]
    t = await buy(client, member, store, [f.line("m", "MUFFIN", "bakery", 1, 300)], rewards=[later])
    assert t["lines"][0]["discount"] == 200, t["lines"]
    r = await f.commit(client, f.basket(member, store, [f.line("m", "MUFFIN", "bakery", 1, 300)],
                                        redeem={"punch_rewards": [early[1]]}))
    assert f.assert_problem(r, 422, "no_eligible_item"), r.text
    await f.verify_ledger(app)


@pytest.mark.parametrize("broad_first", [True, False])
async def test_two_rewards_that_fit_the_basket_are_taken_whatever_their_order(client, app, shop, broad_first):
    """A reward for any hot drink and a coffee-only one, on a coffee and a tea: both fit (the hot one on the tea).
    Listed hot first, the quote and the commit answered 422 no_eligible_item: the hot one took the coffee."""
    store, member = shop
    hot = await make_program(client, name="Hot drinks", qualifying={"categories": ["coffee", "tea"]},
                             stamps_required=1, reward={"categories": ["coffee", "tea"]})
    only = await make_program(client, name="Coffee", qualifying={"skus": ["ESPRESSO"]}, stamps_required=1,
                              reward={"categories": ["coffee"]})
    first = (await buy(client, member, store, [f.line("x", "EARL", "tea", 1, 300)]))["earned"]["rewards_issued"]
    second = (await buy(client, member, store, [coffee("y", 1, 300, sku="ESPRESSO")]))["earned"]["rewards_issued"]
    broad = next(r["id"] for r in first if r["program_id"] == hot["id"])
    narrow = next(r["id"] for r in first + second if r["program_id"] == only["id"])
    body = f.basket(member, store, [coffee("a", 1, 400), f.line("b", "CHAI", "tea", 1, 500)],
                    redeem={"punch_rewards": [broad, narrow] if broad_first else [narrow, broad]})
    q = await client.post("/v1/checkout/quote", json=body)
    assert q.status_code == 200 and q.json()["totals"]["discount"] == 900, q.text
    r = await f.commit(client, body)
    assert r.status_code == 201 and r.json()["totals"]["discount"] == 900, r.text
    await f.verify_ledger(app)


async def test_a_return_after_a_rewards_end_treats_it_as_expired_whether_or_not_the_sweep_ran(client, app, clock):
    """Two members each buy 3 coffees (a reward at 3 stamps, valid 7 days) and never use the reward; 8 days later
    each returns a coffee, one before the sweep and one after. Both cards end at -1 with the reward expired. The
    first was revoked instead, its 3 stamps given back: with one more coffee, a live reward from a dead one."""
    from service.punchcards import service as punch_service

    store = (await f.create_store(client))["id"]
    program = await make_program(client, stamps_required=3, reward_valid_days=7)
    early, late = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    sales = {m: await buy(client, m, store, [coffee(quantity=3)]) for m in (early, late)}
    clock.advance(timedelta(days=8))
    assert (await f.return_lines(client, sales[early]["id"], {"c": 1})).status_code == 201
    now = clock.now()
    await app.state.db.run(lambda session: punch_service.expire_rewards(session, now, now))
    assert (await f.return_lines(client, sales[late]["id"], {"c": 1})).status_code == 201
    for m in (early, late):
        c = await card(client, m, program["id"])
        assert (c["stamps"], [r["status"] for r in c["rewards"]]) == (-1, ["expired"]), (m == early, c)
    assert (await buy(client, early, store, [coffee()]))["earned"]["rewards_issued"] == []
    await f.verify_ledger(app)


async def test_loyalty_sweep_expires_rewards(client, app, shop, clock, database_url):
    import asyncio
    import os
    import subprocess
    import sys

    store, member = shop
    program = await make_program(client, stamps_required=1, reward_valid_days=7)
    await buy(client, member, store, [coffee()])
    as_of = (clock.now() + timedelta(days=8)).isoformat()
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service.cli", "sweep", "--allow-future", "--as-of", as_of],
        env={**os.environ, "LOYALTY_DATABASE_URL": database_url}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "expired 1 punch-card rewards" in done.stdout
    assert (await card(client, member, program["id"]))["rewards"][0]["status"] == "expired"


async def test_inactive_programs_do_not_stamp(client, shop):
    store, member = shop
    program = await make_program(client)
    body = {k: v for k, v in program.items() if k != "id"} | {"active": False}
    assert (await client.put(f"/v1/punch-card-programs/{program['id']}", json=body)).status_code == 200
    t = await buy(client, member, store, [coffee()])
    assert t["earned"]["stamps"] == []
    r = await client.get("/v1/members/mem_nope/punch-cards")
    assert r.status_code == 404


async def test_a_members_cards_page_by_programme(client, shop):
    store, member = shop
    programs = [(await client.post("/v1/punch-card-programs", json={
        "name": f"Card {n}", "qualifying": {"skus": [], "categories": [f"cat{n}"]}, "stamps_required": 5,
        "reward": {"skus": [], "categories": [f"cat{n}"], "max_value": None}, "reward_valid_days": 30,
        "active": True})).json()["id"] for n in range(3)]
    await buy(client, member, store, [f.line("a", "X", "cat1", 2, 100)])
    seen, after = [], None
    while True:
        r = await client.get(f"/v1/members/{member}/punch-cards", params={"limit": 2, **({"after": after} if after
                                                                                        else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= 2
        seen += [(c["program_id"], c["stamps"]) for c in page["data"]]
        if (after := page["next_cursor"]) is None:
            break
    assert [p for p, _ in seen] == sorted(p for p, _ in seen) and set(programs) <= {p for p, _ in seen}
    assert dict(seen)[programs[1]] == 2 and dict(seen)[programs[0]] == 0


async def test_quotes_offer_only_usable_rewards_soonest_first_even_of_a_program_since_deactivated(
        client, shop, clock):
    store, member = shop
    program = await make_program(client, stamps_required=1, reward_valid_days=7)
    used = (await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"]
    await buy(client, member, store, [coffee("d")], rewards=[used])  # redeemed: never offered again
    clock.advance(timedelta(days=1))
    first = (await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"]
    clock.advance(timedelta(days=1))
    second = (await buy(client, member, store, [coffee()]))["earned"]["rewards_issued"][0]["id"]
    body = {k: v for k, v in program.items() if k != "id"} | {"active": False}
    assert (await client.put(f"/v1/punch-card-programs/{program['id']}", json=body)).status_code == 200

    async def offered() -> list[str]:
        q = await client.post("/v1/checkout/quote", json=f.basket(member, store, [coffee()]))
        assert q.status_code == 200, q.text
        return [o["id"] for o in q.json()["offers"] if o["kind"] == "punch_reward"]

    assert await offered() == [first, second]
    clock.advance(timedelta(days=6, hours=1))  # the first is past its 7 days, the second not yet
    assert await offered() == [second]


async def test_a_sale_that_completes_a_card_costs_no_statement_more(client, app, clock, shop):
    """The rewards take their programme from the process's copy (no read) and go out with the commit's other
    writes, all of a sale's in one INSERT, and their events with the sale's own (``db.defer_row``): on PostgreSQL a
    sale that issues rewards costs what a sale that only stamps does. SQLite inserts each reward and each event."""
    store, member = shop
    program = await make_program(client, stamps_required=2)
    await buy(client, member, store, [coffee()])  # the card's account opened, one stamp on it
    counts = {}
    for label, lines in (("reward", [coffee()]), ("stamp", [coffee()]), ("three rewards", [coffee(quantity=6)])):
        with f.counted_statements(app) as statements:
            sale = await buy(client, member, store, lines)
        counts[label] = len(statements)
        assert len(sale["earned"]["rewards_issued"]) == {"reward": 1, "stamp": 0, "three rewards": 3}[label]
    if app.state.db.dialect == "postgresql":
        assert counts["reward"] == counts["stamp"] == counts["three rewards"], counts
    else:
        assert (counts["reward"], counts["three rewards"]) == (counts["stamp"] + 2, counts["stamp"] + 6), counts
    rewards = (await card(client, member, program["id"]))["rewards"]
    assert len(rewards) == 4 and {r["status"] for r in rewards} == {"available"}, rewards
    assert {r["expires_at"][:10] for r in rewards} == {(clock.now() + timedelta(days=30)).date().isoformat()}
