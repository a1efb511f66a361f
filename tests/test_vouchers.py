"""Vouchers through HTTP: campaigns, codes, limits, redemption at the till (amount, percent, free item), stacking,
eligibility, validity, voids, threshold issue, offers and nudges, and the limit on failed look-ups (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import collections
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from service.audit import AuditEntry
from service.ids import CODE_ALPHABET
from tests import factories as f
from tests.conftest import ADMIN_KEY, IS_POSTGRES
from tests.server import running_server


async def make_campaign(client, **changes) -> dict:
    body = {"name": "Five off", "kind": "amount_off", "value": 500, **changes}
    r = await client.post("/v1/voucher-campaigns", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def issue(client, campaign_id: str, *, key: str | None = None, **body) -> list[dict]:
    r = await client.post(f"/v1/voucher-campaigns/{campaign_id}/vouchers", json=body,
                          headers={"Idempotency-Key": key or f.new_key()})
    assert r.status_code == 201, r.text
    return r.json()


async def give(client, campaign_id: str, member_id: str) -> dict:
    [voucher] = await issue(client, campaign_id, member_id=member_id)
    return voucher


def with_vouchers(member: str, store: str, lines: list[dict], codes: list[str], **extra) -> dict:
    return f.basket(member, store, lines, redeem={"vouchers": codes, **extra})


async def voucher(client, code: str) -> dict:
    r = await client.get(f"/v1/vouchers/{code}")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
async def shop(client):
    store = await f.create_store(client)
    member = await f.enroll(client)
    return store["id"], member["id"]


# --- campaigns and codes ------------------------------------------------------------------------------------------

async def test_campaign_crud_validation_and_audit(client, app, make_client):
    campaign = await make_campaign(client, min_spend=2000, categories=["coffee"], valid_days=30, per_member_limit=2,
                                   total_limit=100, stackable=True, audience={"tiers": ["gold"]},
                                   auto_issue={"spend_threshold": 10_000})
    assert campaign["id"].startswith("cmp_") and campaign["issued_count"] == 0 and campaign["active"] is True
    assert campaign["audience"] == {"tiers": ["gold"], "quadrants": None, "lifecycles": None}
    assert (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json() == campaign
    assert [c["id"] for c in (await client.get("/v1/voucher-campaigns")).json()["data"]] == [campaign["id"]]
    body = {k: v for k, v in campaign.items() if k not in ("id", "issued_count")} | {"active": False, "value": 700}
    r = await client.put(f"/v1/voucher-campaigns/{campaign['id']}", json=body)
    assert r.status_code == 200 and r.json()["value"] == 700 and r.json()["active"] is False
    f.assert_problem(await client.get("/v1/voucher-campaigns/cmp_nope"), 404, "campaign_not_found")
    for bad in ({"kind": "percent_off", "value": 101}, {"kind": "percent_off", "value": None},
                {"kind": "amount_off", "value": 0}, {"kind": "bogus"}, {"min_spend": -1},
                {"valid_from": "2030-01-02T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"},
                {"valid_from": 1893456000}, {"valid_until": 1893456000.5},  # numbers, not date-time text
                {"valid_until": "1893456000"},  # nor digits in a string
                {"stackable": "yes"}, {"active": 0},  # booleans, not words or numbers
                {"valid_from": "0001-01-01T00:00:00+01:00"},  # before the year 1 in UTC (fuzz seed 4205855847)
                {"valid_until": "9999-12-31T23:00:00-05:00"},  # after 9999 in UTC
                {"audience": {"quadrants": ["nobody"]}}, {"auto_issue": {"spend_threshold": 0}}, {"extra": 1}):
        r = await client.post("/v1/voucher-campaigns", json={"name": "x", "kind": "amount_off", "value": 5, **bad})
        f.assert_problem(r, 422, "validation_error")
    r = await client.post("/v1/voucher-campaigns", json={"name": "Free coffee", "kind": "free_item",
                                                         "categories": ["coffee"]})
    assert r.status_code == 201 and r.json()["value"] is None
    store = (await f.create_store(client))["id"]
    pos = make_client(await f.create_key(client, "pos", store))
    assert (await pos.post("/v1/voucher-campaigns", json=body)).status_code == 403
    assert (await pos.get("/v1/voucher-campaigns")).status_code == 403
    async with app.state.db.session(write=False) as session:
        actions = [(a.action, a.target) for a in (await session.execute(select(AuditEntry))).scalars()]
    assert ("voucher_campaign.created", campaign["id"]) in actions
    assert ("voucher_campaign.updated", campaign["id"]) in actions


async def test_bulk_issue_makes_unguessable_unique_codes_fast_and_is_idempotent(client, app):
    campaign = await make_campaign(client, valid_until="2099-01-01T00:00:00Z")
    loop = asyncio.get_running_loop()
    started = loop.time()
    vouchers = await issue(client, campaign["id"], key="bulk-1", count=10_000)
    assert loop.time() - started < 30  # one multi-row insert per thousand codes, not ten thousand round trips
    codes = [v["code"] for v in vouchers]
    assert len(set(codes)) == 10_000
    assert all(len(c) >= 10 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set("".join(codes)) & set("01OIL")
    assert {v["status"] for v in vouchers} == {"active"} and {v["member_id"] for v in vouchers} == {None}
    assert vouchers[0]["valid_until"].startswith("2099-01-01")
    # The same request again: the same codes, no new vouchers.
    r = await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"count": 10_000},
                          headers={"Idempotency-Key": "bulk-1"})
    assert r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true"
    assert [v["code"] for v in r.json()] == codes
    assert (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json()["issued_count"] == 10_000
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"count": 10_001},
                                       headers={"Idempotency-Key": f.new_key()}), 422, "validation_error")
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers",
                                       json={"count": 1, "member_id": "mem_x"},
                                       headers={"Idempotency-Key": f.new_key()}), 422, "validation_error")
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"count": 1}),
                     400, "idempotency_key_required")
    # A code reads back whatever the cashier typed: case, dashes and spaces do not matter.
    typed = "-".join([codes[0][:4].lower(), codes[0][4:]])
    assert (await voucher(client, typed))["id"] == vouchers[0]["id"]


async def test_a_colliding_code_is_drawn_again(client, monkeypatch):
    from service.vouchers import service as voucher_service

    campaign = await make_campaign(client)
    [taken] = await issue(client, campaign["id"], count=1)
    draws = iter([taken["code"], "ZZZZZZZZZZZZZ", "YYYYYYYYYYYYY"])
    monkeypatch.setattr(voucher_service, "random_code", lambda length: next(draws))
    # The first batch collides with the existing code, is rolled back, and the next draw goes in.
    [fresh] = await issue(client, campaign["id"], count=1)
    assert fresh["code"] == "ZZZZZZZZZZZZZ"
    assert (await voucher(client, taken["code"]))["id"] == taken["id"]
    assert (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json()["issued_count"] == 2


async def test_per_member_and_total_limits(client, shop):
    _, member = shop
    other = (await f.enroll(client))["id"]
    campaign = await make_campaign(client, per_member_limit=2, total_limit=5)
    await give(client, campaign["id"], member)
    await give(client, campaign["id"], member)
    r = await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"member_id": member},
                          headers={"Idempotency-Key": f.new_key()})
    assert "at most 2 per member" in f.assert_problem(r, 409, "voucher_limit_reached")["detail"]
    await give(client, campaign["id"], other)
    r = await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"count": 3},
                          headers={"Idempotency-Key": f.new_key()})
    assert "only 2 can still be issued" in f.assert_problem(r, 409, "voucher_limit_reached")["detail"]
    assert (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json()["issued_count"] == 3
    assert len(await issue(client, campaign["id"], count=2)) == 2
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"count": 1},
                                       headers={"Idempotency-Key": f.new_key()}), 409, "voucher_limit_reached")
    f.assert_problem(await client.post("/v1/voucher-campaigns/cmp_nope/vouchers", json={"count": 1},
                                       headers={"Idempotency-Key": f.new_key()}), 404, "campaign_not_found")
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers",
                                       json={"member_id": "mem_nope"}, headers={"Idempotency-Key": f.new_key()}),
                     404, "member_not_found")
    listed = (await client.get(f"/v1/members/{member}/vouchers")).json()
    assert len(listed["data"]) == 2 and listed["next_cursor"] is None


@pytest.mark.postgres_only
async def test_lowering_total_limit_while_issuing_is_refused_not_a_500(client, app):
    """The update locks the campaign's row before comparing: an issue that got there first is counted."""
    campaign = await make_campaign(client, total_limit=100)
    await issue(client, campaign["id"], count=30)
    body = {"name": "Five off", "kind": "amount_off", "value": 500, "total_limit": 32}
    async with f.row_held(app, "SELECT id FROM voucher_campaigns WHERE id = :c FOR UPDATE",
                          c=campaign["id"]) as (release, waiting):
        issuing = asyncio.create_task(client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers",
                                                  json={"count": 10}, headers={"Idempotency-Key": f.new_key()}))
        await waiting(1)
        lowering = asyncio.create_task(client.put(f"/v1/voucher-campaigns/{campaign['id']}", json=body))
        await waiting(2)
        await release()
        issued, lowered = await issuing, await lowering
    assert issued.status_code == 201, issued.text
    problem = f.assert_problem(lowered, 409, "voucher_limit_reached")
    assert problem["issued_count"] == 40
    got = (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json()
    assert (got["issued_count"], got["total_limit"]) == (40, 100)


async def test_per_member_limit_holds_for_bearer_codes_at_the_till(client, shop):
    store, member = shop
    campaign = await make_campaign(client, name="One per customer", per_member_limit=1, stackable=True)
    first, second = (v["code"] for v in await issue(client, campaign["id"], count=2))
    lines = [f.line(unit_price=2000)]
    r = await f.commit(client, with_vouchers(member, store, lines, [first, second]))
    assert "at most 1 per member" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]
    assert (await f.commit(client, with_vouchers(member, store, lines, [first]))).status_code == 201
    r = await f.commit(client, with_vouchers(member, store, lines, [second]))
    assert "already had 1" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]
    other = (await f.enroll(client))["id"]
    assert (await f.commit(client, with_vouchers(other, store, lines, [second]))).status_code == 201
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"member_id": other},
                                       headers={"Idempotency-Key": f.new_key()}), 409, "voucher_limit_reached")


async def test_concurrent_issue_never_passes_the_limits(client, shop):
    _, member = shop
    per_member = await make_campaign(client, per_member_limit=3)
    answers = await asyncio.gather(*(
        client.post(f"/v1/voucher-campaigns/{per_member['id']}/vouchers", json={"member_id": member},
                    headers={"Idempotency-Key": f.new_key()}) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 5
    total = await make_campaign(client, total_limit=25)
    answers = await asyncio.gather(*(
        client.post(f"/v1/voucher-campaigns/{total['id']}/vouchers", json={"count": 10},
                    headers={"Idempotency-Key": f.new_key()}) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [201] * 2 + [409] * 3
    assert (await client.get(f"/v1/voucher-campaigns/{total['id']}")).json()["issued_count"] == 20


async def test_inactive_ended_and_audience_campaigns_do_not_issue(client, clock, shop):
    _, member = shop
    stopped = await make_campaign(client, active=False)
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{stopped['id']}/vouchers", json={"count": 1},
                                       headers={"Idempotency-Key": f.new_key()}), 409, "campaign_not_issuing")
    ended = await make_campaign(client, valid_until=(clock.now() - timedelta(days=1)).isoformat())
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{ended['id']}/vouchers", json={"count": 1},
                                       headers={"Idempotency-Key": f.new_key()}), 409, "campaign_not_issuing")
    gold = await make_campaign(client, audience={"tiers": ["gold"]})
    f.assert_problem(await client.post(f"/v1/voucher-campaigns/{gold['id']}/vouchers", json={"member_id": member},
                                       headers={"Idempotency-Key": f.new_key()}), 422, "member_not_in_audience")


# --- redemption at the till ---------------------------------------------------------------------------------------

async def test_amount_off_redeems_once_and_earns_on_the_net_after_it(client, app, shop):
    store, member = shop
    code = (await give(client, (await make_campaign(client, value=500))["id"], member))["code"]
    lines = [f.line("a", unit_price=3000), f.line("b", unit_price=1000)]
    quote = (await client.post("/v1/checkout/quote", json=with_vouchers(member, store, lines, [code]))).json()
    assert quote["totals"]["discount"] == 500 and quote["totals"]["net"] == 3500
    r = await f.commit(client, with_vouchers(member, store, lines, [code.lower()]))
    assert r.status_code == 201, r.text
    sale = r.json()
    vid = (await voucher(client, code))["id"]
    assert [(a["kind"], a["id"], a["line_id"], a["amount"]) for a in sale["applied"]] == [
        ("voucher", vid, "a", 375), ("voucher", vid, "b", 125)]
    assert sale["totals"] == {"subtotal": 4000, "discount": 500, "net": 3500, "wallet": 0, "gift_cards": 0,
                              "payable": 3500}
    assert sale["earned"]["points"] == 35
    assert (await voucher(client, code))["status"] == "redeemed"
    r = await f.commit(client, with_vouchers(member, store, lines, [code]))
    assert "already used" in f.assert_problem(r, 409, "voucher_already_used")["detail"]
    f.assert_problem(await client.post("/v1/checkout/quote", json=with_vouchers(member, store, lines, [code])),
                     409, "voucher_already_used")
    # An amount larger than the basket takes it to zero, never below.
    big = (await give(client, (await make_campaign(client, value=100_000))["id"], member))["code"]
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=700)], [big]))
    assert r.status_code == 201 and r.json()["totals"]["net"] == 0
    await f.verify_ledger(app)


async def test_a_changed_campaign_applies_at_the_next_sale(client, shop):
    """Each process keeps copies of the campaigns' rules; a change to a campaign is seen by the next quote and
    commit all the same, in the named code and in the member's own vouchers offered."""
    store, member = shop
    campaign = await make_campaign(client, value=500)
    code = (await give(client, campaign["id"], member))["code"]
    lines = [f.line("a", unit_price=3000)]

    async def quoted() -> tuple[int, list[int]]:
        r = await client.post("/v1/checkout/quote", json=with_vouchers(member, store, lines, [code]))
        assert r.status_code == 200, r.text
        return r.json()["totals"]["discount"], [o["value"] for o in r.json()["offers"] if o["kind"] == "voucher"]

    assert await quoted() == (500, [500])
    body = {k: v for k, v in campaign.items() if k not in ("id", "issued_count")} | {"value": 700}
    assert (await client.put(f"/v1/voucher-campaigns/{campaign['id']}", json=body)).status_code == 200
    assert await quoted() == (700, [700])
    r = await client.put(f"/v1/voucher-campaigns/{campaign['id']}", json=body | {"min_spend": 5000})
    assert r.status_code == 200
    r = await f.commit(client, with_vouchers(member, store, lines, [code]))
    assert "50.00 USD" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]  # the new minimum spend


async def test_percent_off_rounds_half_up_once_per_line(client, shop):
    store, member = shop
    ten = await make_campaign(client, kind="percent_off", value=10, stackable=True)
    # 10 % of 105 is 10.5 and of 205 is 20.5: each line rounds up on its own (32 in all, where 10 % of the two
    # lines' 310 is 31); of 101 and 204, 10.1 and 20.4 round down (30, where 10 % of 305 rounds up to 31).
    code = (await give(client, ten["id"], member))["code"]
    r = await f.commit(client, with_vouchers(member, store, [f.line("a", unit_price=105),
                                                              f.line("b", unit_price=205)], [code]))
    assert {ln["line_id"]: ln["discount"] for ln in r.json()["lines"]} == {"a": 11, "b": 21}
    code = (await give(client, ten["id"], member))["code"]
    r = await f.commit(client, with_vouchers(member, store, [f.line("a", unit_price=101),
                                                              f.line("b", unit_price=204)], [code]))
    sale = r.json()
    assert sale["totals"]["discount"] == 30
    assert {ln["line_id"]: ln["discount"] for ln in sale["lines"]} == {"a": 10, "b": 20}
    # Only eligible lines: 15% of the coffee (3 x 333 = 999 -> 149.85 -> 150), nothing off the tea.
    coffee = await make_campaign(client, kind="percent_off", value=15, categories=["coffee"])
    code = (await give(client, coffee["id"], member))["code"]
    lines = [f.line("c1", "LATTE", "coffee", 3, 333), f.line("t", "TEA", "tea", 1, 500)]
    sale = (await f.commit(client, with_vouchers(member, store, lines, [code]))).json()
    assert {ln["line_id"]: ln["discount"] for ln in sale["lines"]} == {"c1": 150, "t": 0}


async def test_free_item_is_the_cheapest_eligible_unit_up_to_the_cap(client, shop):
    store, member = shop
    free = await make_campaign(client, name="Free pastry", kind="free_item", value=None, categories=["pastry"])
    code = (await give(client, free["id"], member))["code"]
    lines = [f.line("a", "CROISSANT", "pastry", 2, 350), f.line("b", "MUFFIN", "pastry", 1, 300),
             f.line("c", "LATTE", "coffee", 1, 200)]
    sale = (await f.commit(client, with_vouchers(member, store, lines, [code]))).json()
    assert {ln["line_id"]: ln["discount"] for ln in sale["lines"]} == {"a": 0, "b": 300, "c": 0}
    capped = await make_campaign(client, name="Pastry up to 2.50", kind="free_item", value=250,
                                 categories=["pastry"], stackable=True)
    code = (await give(client, capped["id"], member))["code"]
    sale = (await f.commit(client, with_vouchers(member, store, lines, [code]))).json()
    assert {ln["line_id"]: ln["discount"] for ln in sale["lines"]} == {"a": 0, "b": 250, "c": 0}


async def test_free_item_after_the_tier_discount_frees_what_the_unit_still_costs(client, shop):
    store, member = shop
    program = (await client.get("/v1/program")).json()
    program["tiers"][0]["discount_percent"] = 10
    await f.set_program(client, tiers=program["tiers"])
    free = await make_campaign(client, kind="free_item", value=None)
    code = (await give(client, free["id"], member))["code"]
    sale = (await f.commit(client, with_vouchers(member, store, [f.line("a", quantity=2, unit_price=401)],
                                                 [code]))).json()
    # 802 less 10% (80.2 -> 80) = 722 for two units; one unit now costs 361, and that is what goes free.
    assert sale["lines"] == [{"line_id": "a", "discount": 80 + 361, "net": 361}]
    assert [a["kind"] for a in sale["applied"]] == ["tier_discount", "voucher"]


async def test_vouchers_apply_in_request_order_with_one_non_stackable(client, shop):
    store, member = shop
    exclusive_a = await make_campaign(client, name="A", value=1000)
    exclusive_b = await make_campaign(client, name="B", value=200)
    stack = await make_campaign(client, name="Ten percent", kind="percent_off", value=10, stackable=True)
    a = (await give(client, exclusive_a["id"], member))["code"]
    b = (await give(client, exclusive_b["id"], member))["code"]
    s = (await give(client, stack["id"], member))["code"]
    lines = [f.line(unit_price=5000)]
    r = await f.commit(client, with_vouchers(member, store, lines, [a, b]))
    body = f.assert_problem(r, 422, "voucher_not_applicable")
    assert "only one non-stackable" in body["detail"] and body["voucher_code"] == b
    # Nothing was written: both are still usable.
    assert (await voucher(client, a))["status"] == "active" and (await voucher(client, b))["status"] == "active"
    # Order matters: 10% of 5000 then 10.00 off is 500 + 1000; the other way round 1000 + 10% of 4000.
    q1 = (await client.post("/v1/checkout/quote", json=with_vouchers(member, store, lines, [s, a]))).json()
    q2 = (await client.post("/v1/checkout/quote", json=with_vouchers(member, store, lines, [a, s]))).json()
    assert q1["totals"]["discount"] == 1500 and q2["totals"]["discount"] == 1400
    f.assert_problem(await client.post("/v1/checkout/quote", json=with_vouchers(member, store, lines, [a, a.lower()])),
                     422, "validation_error")


async def test_vouchers_that_do_not_apply_say_why(client, shop):
    store, member = shop
    other = (await f.enroll(client))["id"]
    lines = [f.line("t", "TEA", "tea", 1, 1500)]
    cases = [
        (await make_campaign(client, min_spend=2000), member, "at least 20.00 USD"),
        (await make_campaign(client, categories=["coffee"]), member, "No item in this basket qualifies"),
        (await make_campaign(client), other, "belongs to another member"),
    ]
    for campaign, owner, words in cases:
        code = (await give(client, campaign["id"], owner))["code"]
        for path in ("/v1/checkout/quote", None):
            body = with_vouchers(member, store, lines, [code])
            r = await (client.post(path, json=body) if path else f.commit(client, body))
            assert words in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]
    # The audience: a gold-only voucher (a bearer code) is refused until the member is gold.
    gold = await make_campaign(client, audience={"tiers": ["gold"]}, value=100)
    [code] = [v["code"] for v in await issue(client, gold["id"], count=1)]
    r = await f.commit(client, with_vouchers(member, store, lines, [code]))
    assert "not offered to this member" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]
    await f.commit(client, f.basket(member, store, [f.line(unit_price=150_000)]))  # reaches gold
    assert (await f.commit(client, with_vouchers(member, store, lines, [code]))).status_code == 201
    # A bearer code becomes the member's when redeemed.
    assert (await voucher(client, code))["member_id"] == member


async def test_unknown_expired_and_not_yet_valid_vouchers(client, clock, shop):
    store, member = shop
    lines = [f.line(unit_price=2000)]
    r = await f.commit(client, with_vouchers(member, store, lines, ["ABCDEFGHJKMNP"]))
    assert f.assert_problem(r, 422, "voucher_not_found")["voucher_code"] == "ABCDEFGHJKMNP"
    f.assert_problem(await client.get("/v1/vouchers/ABCDEFGHJKMNP"), 404, "voucher_not_found")
    week = await make_campaign(client, valid_days=7)
    given = await give(client, week["id"], member)
    code = given["code"]
    clock.advance(timedelta(days=7, seconds=1))
    r = await f.commit(client, with_vouchers(member, store, lines, [code]))
    ended = datetime.fromisoformat(given["valid_until"]).astimezone(ZoneInfo("Europe/Berlin"))  # the store's clock
    assert f"it was valid until {ended:%Y-%m-%d %H:%M}." in f.assert_problem(r, 409, "voucher_expired")["detail"]
    assert (await voucher(client, code))["status"] == "expired"
    later = await make_campaign(client, valid_from=(clock.now() + timedelta(days=2)).isoformat())
    code = (await give(client, later["id"], member))["code"]
    r = await f.commit(client, with_vouchers(member, store, lines, [code]))
    assert "can be used from" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]
    clock.advance(timedelta(days=2))
    assert (await f.commit(client, with_vouchers(member, store, lines, [code]))).status_code == 201


async def test_a_voucher_issued_before_its_campaign_starts_gets_its_days_from_the_start(client, clock, shop):
    """A campaign of next month, each voucher good for 7 days, issued to a member today: the voucher is usable
    for 7 days from the campaign's start. Its days were counted from the issue, so it ended 3 weeks before it
    began: a voucher no one could ever use, issued without a word."""
    store, member = shop
    start = clock.now() + timedelta(days=30)
    campaign = await make_campaign(client, valid_from=start.isoformat(), valid_days=7)
    issued = await give(client, campaign["id"], member)
    assert datetime.fromisoformat(issued["valid_until"]) == start + timedelta(days=7)
    lines = [f.line(unit_price=2000)]
    r = await f.commit(client, with_vouchers(member, store, lines, [issued["code"]]))
    assert "can be used from" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]
    clock.advance(timedelta(days=36))
    assert (await f.commit(client, with_vouchers(member, store, lines, [issued["code"]]))).status_code == 201
    assert (await voucher(client, issued["code"]))["status"] == "redeemed"


async def test_void_restores_a_voucher_while_it_is_still_valid(client, clock, shop):
    store, member = shop
    campaign = await make_campaign(client, valid_days=10)
    keep = (await give(client, campaign["id"], member))["code"]
    lapse = (await give(client, campaign["id"], member))["code"]
    first = (await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2000)], [keep]))).json()
    clock.advance(timedelta(days=9))
    second = (await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2000)], [lapse]))).json()
    r = await client.post(f"/v1/checkout/transactions/{first['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    assert (await voucher(client, keep))["status"] == "active"
    assert (await f.commit(client, with_vouchers(member, store, [f.line(unit_price=900)], [keep]))).status_code == 201
    clock.advance(timedelta(days=2))  # past the end of the second voucher
    await client.post(f"/v1/checkout/transactions/{second['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert (await voucher(client, lapse))["status"] == "expired"


async def test_threshold_voucher_is_issued_by_the_sale_that_reaches_it_and_revoked_by_its_void(client, app, shop):
    store, member = shop
    campaign = await make_campaign(client, name="Spend 100, get 5", auto_issue={"spend_threshold": 10_000},
                                   valid_days=30)
    small = (await f.commit(client, f.basket(member, store, [f.line(unit_price=9_999)]))).json()
    assert small["earned"]["vouchers_issued"] == []
    # Net spend counts after discounts: 10,500 less a 5.00 voucher is 10,000 and reaches the threshold.
    five = (await give(client, (await make_campaign(client, value=500))["id"], member))["code"]
    sale = (await f.commit(client, with_vouchers(member, store, [f.line(unit_price=10_500)], [five]))).json()
    [earned] = sale["earned"]["vouchers_issued"]
    assert earned["campaign_id"] == campaign["id"] and earned["member_id"] == member and earned["status"] == "active"
    fetched = (await client.get(f"/v1/checkout/transactions/{sale['id']}")).json()
    assert fetched["earned"]["vouchers_issued"] == [earned]
    assert (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json()["issued_count"] == 1
    r = await client.post(f"/v1/checkout/transactions/{sale['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    assert r.json()["earned"]["vouchers_issued"][0]["status"] == "void"
    assert (await voucher(client, earned["code"]))["status"] == "void"
    assert (await voucher(client, five))["status"] == "active"  # the voucher the sale used came back
    assert (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json()["issued_count"] == 0
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2000)], [earned["code"]]))
    assert "withdrawn" in f.assert_problem(r, 409, "voucher_expired")["detail"]
    # Once used, a void of the sale that earned it leaves it used.
    sale = (await f.commit(client, f.basket(member, store, [f.line(unit_price=12_000)]))).json()
    [earned] = sale["earned"]["vouchers_issued"]
    assert (await f.commit(client, with_vouchers(member, store, [f.line(unit_price=900)], [earned["code"]]))
            ).status_code == 201
    await client.post(f"/v1/checkout/transactions/{sale['id']}/void", headers={"Idempotency-Key": f.new_key()})
    assert (await voucher(client, earned["code"]))["status"] == "redeemed"
    await f.verify_ledger(app)


async def test_a_backdated_sale_earns_threshold_vouchers_as_at_its_time(client, clock, shop):
    """A till back online or a history imported: the sale earns a threshold voucher as it would have then, valid
    from then, and none from a campaign made after it or one whose voucher would already be over; so a history
    replayed beside a campaign of 30-day vouchers gives vouchers to its last 30 days' sales only."""
    store, member = shop
    clock.freeze(clock.now())
    campaign = await make_campaign(client, name="Spend 100, get 5", auto_issue={"spend_threshold": 10_000},
                                   valid_days=30)
    clock.advance(timedelta(days=40))

    async def earned(at: datetime) -> list[dict]:
        r = await f.commit(client, f.basket(member, store, [f.line(unit_price=10_000)], occurred_at=at.isoformat()))
        assert r.status_code == 201, r.text
        return r.json()["earned"]["vouchers_issued"]

    def ends(voucher_: dict) -> datetime:
        return datetime.fromisoformat(voucher_["valid_until"].replace("Z", "+00:00"))

    two_days_ago = clock.now() - timedelta(days=2)
    [late] = await earned(two_days_ago)
    assert ends(late) == two_days_ago + timedelta(days=30)  # 28 days left, not 30
    assert await earned(clock.now() - timedelta(days=35)) == []  # it would have ended five days ago
    assert await earned(clock.now() - timedelta(days=41)) == []  # the campaign did not exist yet
    [today] = await earned(clock.now())
    assert ends(today) == clock.now() + timedelta(days=30)
    assert (await client.get(f"/v1/voucher-campaigns/{campaign['id']}")).json()["issued_count"] == 2


async def test_threshold_issue_honours_limits_and_audience(client, shop):
    store, member = shop
    limited = await make_campaign(client, name="Once", auto_issue={"spend_threshold": 1000}, per_member_limit=1)
    gold = await make_campaign(client, name="Gold only", auto_issue={"spend_threshold": 1000},
                               audience={"tiers": ["gold"]})
    first = (await f.commit(client, f.basket(member, store, [f.line(unit_price=1000)]))).json()
    assert [v["campaign_id"] for v in first["earned"]["vouchers_issued"]] == [limited["id"]]
    second = (await f.commit(client, f.basket(member, store, [f.line(unit_price=150_000)]))).json()
    assert second["tier_change"]["to"] == "gold"  # the sale made the member gold: the gold voucher follows
    assert [v["campaign_id"] for v in second["earned"]["vouchers_issued"]] == [gold["id"]]


async def test_a_threshold_campaign_set_up_ahead_of_its_start_rewards_sales_from_its_start_on(client, clock, shop):
    """ "Spend 100 in December, get 5", set up in November: a November sale earns nothing (and takes nothing from
    the campaign's limits); a sale once December has begun earns the voucher."""
    store, member = shop
    clock.freeze(clock.now())
    start = clock.now() + timedelta(days=30)
    december = await make_campaign(client, name="December", auto_issue={"spend_threshold": 10_000}, total_limit=1,
                                   valid_from=start.isoformat(), valid_until=(start + timedelta(days=31)).isoformat())
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=10_000)]))
    assert r.status_code == 201, r.text
    assert r.json()["earned"]["vouchers_issued"] == []
    clock.freeze(start)
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=10_000)]))
    assert [v["campaign_id"] for v in r.json()["earned"]["vouchers_issued"]] == [december["id"]]


async def test_a_return_below_the_threshold_withdraws_the_unused_voucher_the_sale_earned(client, shop):
    store, member = shop
    thanks = await make_campaign(client, name="Spend 10, get 2", value=200, auto_issue={"spend_threshold": 1000},
                                 stackable=True)
    lines = [f.line("a", unit_price=400), f.line("b", unit_price=400), f.line("c", unit_price=400)]
    sale = (await f.commit(client, f.basket(member, store, lines))).json()
    [earned] = sale["earned"]["vouchers_issued"]
    r = await f.return_lines(client, sale["id"], {"a": 1})  # 800 left: below 1000
    assert r.status_code == 201 and r.json()["reversed"]["vouchers"] == [earned["code"]], r.text
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=1000)], [earned["code"]]))
    assert "withdrawn" in f.assert_problem(r, 409, "voucher_expired")["detail"]
    assert (await client.get(f"/v1/voucher-campaigns/{thanks['id']}")).json()["issued_count"] == 0  # its place back
    # A return that leaves the spend above the threshold, or a voucher already used, takes nothing.
    big = (await f.commit(client, f.basket(member, store, [*lines, f.line("d", unit_price=400)]))).json()
    r = await f.return_lines(client, big["id"], {"d": 1})
    assert r.status_code == 201 and r.json()["reversed"]["vouchers"] == []
    [kept] = big["earned"]["vouchers_issued"]
    assert (await f.commit(client, with_vouchers(member, store, [f.line(unit_price=1000)],
                                                 [kept["code"]]))).status_code == 201
    r = await f.return_lines(client, big["id"], {"a": 1, "b": 1})
    assert r.status_code == 201 and r.json()["reversed"]["vouchers"] == []


async def test_a_return_is_judged_against_the_threshold_the_sale_reached(client, shop):
    """100.00 + 1.00 earned the "spend 100" voucher; the campaign then asks 150 of new sales. Returning the 1.00
    leaves 100.00, which still reaches the threshold the sale earned under: the voucher stays (it was withdrawn,
    judged against the campaign's new figure). Lowered to 50 instead, a return to 60.00 of a sale that earned
    under 100 takes it back."""
    store, member = shop
    campaign = await make_campaign(client, name="Spend 100", auto_issue={"spend_threshold": 10_000}, valid_days=30)
    body = {k: v for k, v in campaign.items() if k not in ("id", "issued_count")}

    async def sale(*prices: int) -> dict:
        r = await f.commit(client, f.basket(member, store, [f.line(str(i), unit_price=p)
                                                            for i, p in enumerate(prices)]))
        assert len(r.json()["earned"]["vouchers_issued"]) == 1, r.text
        return r.json()

    raised, lowered = await sale(10_000, 100), await sale(6_000, 4_000)
    r = await client.put(f"/v1/voucher-campaigns/{campaign['id']}", json={**body, "auto_issue": {
        "spend_threshold": 15_000}})
    assert r.status_code == 200, r.text
    r = await f.return_lines(client, raised["id"], {"1": 1})
    assert r.status_code == 201 and r.json()["reversed"]["vouchers"] == [], r.text
    r = await client.put(f"/v1/voucher-campaigns/{campaign['id']}", json={**body, "auto_issue": {
        "spend_threshold": 5_000}})
    assert r.status_code == 200, r.text
    r = await f.return_lines(client, lowered["id"], {"1": 1})
    [code] = [v["code"] for v in lowered["earned"]["vouchers_issued"]]
    assert r.status_code == 201 and r.json()["reversed"]["vouchers"] == [code], r.text


@pytest.mark.parametrize("undo", ["void", "return"])
async def test_a_voucher_whose_earning_sale_was_undone_does_not_come_back_when_its_use_is_voided(client, shop, undo):
    """A "spend 100, get 5" voucher used by a second sale stays used when the sale that earned it is voided or
    returned (accepted: it is not a balance). Voiding the second sale then gave it back, usable again, for spend
    the customer had been refunded; it is withdrawn instead, its place given back."""
    store, member = shop
    thanks = await make_campaign(client, name="Spend 100 get 5", auto_issue={"spend_threshold": 10_000})
    earning = (await f.commit(client, f.basket(member, store, [f.line("1", unit_price=10_000)]))).json()
    [earned] = earning["earned"]["vouchers_issued"]
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2_000)], [earned["code"]]))
    assert r.status_code == 201, r.text
    using = r.json()
    if undo == "void":
        assert (await f.void(client, earning["id"])).status_code == 200
    else:
        assert (await f.return_lines(client, earning["id"], {"1": 1})).status_code == 201
    assert (await voucher(client, earned["code"]))["status"] == "redeemed"
    assert (await f.void(client, using["id"])).status_code == 200
    assert (await voucher(client, earned["code"]))["status"] == "void"
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2_000)], [earned["code"]]))
    f.assert_problem(r, 409, "voucher_expired")
    assert (await client.get(f"/v1/voucher-campaigns/{thanks['id']}")).json()["issued_count"] == 0
    # a voucher whose earning sale stands comes back as before
    kept = (await f.commit(client, f.basket(member, store, [f.line(unit_price=10_000)]))).json()
    [code] = [v["code"] for v in kept["earned"]["vouchers_issued"]]
    used = (await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2_000)], [code]))).json()
    assert (await f.void(client, used["id"])).status_code == 200
    assert (await voucher(client, code))["status"] == "active"


async def test_a_return_withdraws_what_the_sale_earned_after_its_campaign_stopped_issuing(client, shop):
    """A campaign whose "spend 100, get 5" has been taken off (``auto_issue`` null) no longer has a threshold; the
    voucher keeps the one its sale reached. A return leaving 40.00 withdraws it (until 2026-12-08 nothing did but
    a return of everything, while a void of the same sale did)."""
    store, member = shop
    campaign = await make_campaign(client, name="Spend 100 get 5", auto_issue={"spend_threshold": 10_000})
    sale = (await f.commit(client, f.basket(member, store, [f.line("1", unit_price=6_000),
                                                            f.line("2", unit_price=4_000)]))).json()
    [earned] = sale["earned"]["vouchers_issued"]
    body = {k: v for k, v in campaign.items() if k not in ("id", "issued_count")} | {"auto_issue": None}
    assert (await client.put(f"/v1/voucher-campaigns/{campaign['id']}", json=body)).status_code == 200
    r = await f.return_lines(client, sale["id"], {"1": 1})
    assert r.status_code == 201 and r.json()["reversed"]["vouchers"] == [earned["code"]], r.text
    assert (await voucher(client, earned["code"]))["status"] == "void"


# --- what the till and the app see --------------------------------------------------------------------------------

async def test_quote_offers_own_vouchers_soonest_expiring_first_and_nudges_before_they_expire(client, shop):
    store, member = shop
    month = await make_campaign(client, name="Month", value=300, valid_days=30)
    week = await make_campaign(client, name="Week", value=200, valid_days=5)
    forever = await make_campaign(client, name="Forever", value=100, min_spend=10_000)
    codes = {name: (await give(client, c["id"], member))["code"]
             for name, c in (("forever", forever), ("month", month), ("week", week))}
    other = (await f.enroll(client))["id"]
    await give(client, month["id"], other)
    quote = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=1000)]))).json()
    offers = [o for o in quote["offers"] if o["kind"] == "voucher"]
    assert [o["id"] for o in offers] == [codes["week"], codes["month"], codes["forever"]]
    assert [(o["value"], o["applicable"]) for o in offers] == [(200, True), (300, True), (0, False)]
    assert "at least 100.00 USD" in offers[2]["reason"]
    nudges = [n["text"] for n in quote["nudges"] if n["kind"] == "voucher_expiry"]
    assert len(nudges) == 1 and codes["week"] in nudges[0]
    listed = (await client.get(f"/v1/members/{member}/vouchers")).json()["data"]
    assert sorted(v["code"] for v in listed) == sorted(codes.values())
    summary = (await client.get(f"/v1/members/{member}/summary")).json()
    assert [v["code"] for v in summary["vouchers"]] == [codes["week"], codes["month"], codes["forever"]]
    f.assert_problem(await client.get("/v1/members/mem_nope/vouchers"), 404, "member_not_found")


async def test_the_apps_offers_call_a_voucher_applicable_only_when_the_member_can_use_it_now(client, clock, shop):
    """The app's offers have no basket: a voucher is applicable there when the member can use it at all now. One
    valid only from next week, or one for `new` members held by a member who is no longer new, the till refuses
    (with the reason) and the app listed as applicable; the app now says the same reason. A basket's spend and
    items are not judged without a basket.

    At noon UTC: the till names dates in the store's zone (Berlin) and the app, told no zone, in UTC; for
    the hour before midnight UTC they name different days, and the reasons would differ."""
    store, _ = shop
    clock.freeze((clock.now() + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0))
    member = (await f.enroll(client))["id"]
    later = (await give(client, (await make_campaign(client, name="Later", valid_from=(
        clock.now() + timedelta(days=7)).isoformat()))["id"], member))["code"]
    welcome = (await give(client, (await make_campaign(client, name="Welcome", audience={"lifecycles": ["new"]},
                                                       valid_days=90))["id"], member))["code"]
    big = (await give(client, (await make_campaign(client, name="Big", min_spend=100_000))["id"], member))["code"]

    async def offers() -> tuple[dict, dict]:
        q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=2_000)]))).json()
        app = (await client.get(f"/v1/members/{member}/offers")).json()
        return ({o["id"]: o for o in q["offers"] if o["kind"] == "voucher"},
                {o["id"]: o for o in app["offers"] if o["kind"] == "voucher"})

    till, app = await offers()
    assert "can be used from" in till[later]["reason"] and till[later]["reason"] == app[later]["reason"]
    assert (app[later]["applicable"], app[later]["value"]) == (False, 0)
    assert (app[welcome]["applicable"], app[welcome]["value"]) == (True, 500)  # enrolled today: new
    assert app[big]["applicable"] is True and till[big]["applicable"] is False  # the spend is the basket's
    clock.advance(timedelta(days=31))  # never bought, enrolled 31 days ago: active, no longer new
    till, app = await offers()
    assert "not offered to this member" in till[welcome]["reason"] and till[welcome]["reason"] == app[welcome]["reason"]
    assert (app[welcome]["applicable"], app[welcome]["value"]) == (False, 0)
    assert app[later]["applicable"] is True  # its week has come
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2_000)], [welcome]))
    assert "not offered to this member" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]


async def test_the_apps_offers_name_the_days_of_the_time_zone_the_app_gives(client, clock, shop):
    """At 23:30 UTC it is already the next day in Berlin, where the shop is: the till names a voucher's first day
    on Berlin's calendar, the app on UTC's unless it names a zone; with Berlin's it says what the till says."""
    store, _ = shop
    clock.freeze((clock.now() + timedelta(days=1)).replace(hour=23, minute=30, second=0, microsecond=0))
    member = (await f.enroll(client))["id"]
    starts = clock.now() + timedelta(days=7)
    later = (await give(client, (await make_campaign(client, name="Later", valid_from=starts.isoformat()))["id"],
                        member))["code"]

    async def app_reason(**params) -> str:
        r = await client.get(f"/v1/members/{member}/offers", params=params)
        return next(o["reason"] for o in r.json()["offers"] if o["id"] == later)

    quote = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=2_000)]))).json()
    till = next(o["reason"] for o in quote["offers"] if o["id"] == later)
    berlin_day = (starts + timedelta(days=1)).date().isoformat()
    assert berlin_day in till
    assert await app_reason(timezone="Europe/Berlin") == till
    assert starts.date().isoformat() in await app_reason()  # UTC's calendar
    assert await app_reason(timezone="UTC") == await app_reason()
    problem = f.assert_problem(await client.get(f"/v1/members/{member}/offers", params={"timezone": "Mars/Olympus"}),
                               422, "validation_error")
    assert any("not an IANA time zone" in e["msg"] for e in problem["errors"])


async def test_a_voucher_offer_speaks_the_members_language(client, shop):
    store, _ = shop
    member = (await f.enroll(client, locale="zh-CN"))["id"]
    big = await make_campaign(client, name="满百减五", value=500, min_spend=10_000, valid_days=30)
    code = (await give(client, big["id"], member))["code"]
    quote = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=1000)]))).json()
    [offer] = [o for o in quote["offers"] if o["kind"] == "voucher"]
    assert offer["reason"] == f"优惠券 {code} 需消费满 100.00 USD，本单为 10.00 USD。"
    assert offer["description"].startswith("立减 5.00 USD，有效期至 ")
    # The till's error, when the cashier tries it anyway, is in English (errors are the till's, not the member's).
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=1000)], [code]))
    assert "needs a spend of at least 100.00 USD" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]


async def test_voucher_look_up_by_code(client, make_client, shop):
    _, member = shop
    campaign = await make_campaign(client, name="Five off", min_spend=1000, stackable=True)
    v = await give(client, campaign["id"], member)
    app_client = make_client(await f.create_key(client, "app"))
    r = await app_client.get(f"/v1/vouchers/{v['code']}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["title"] == "Five off" and body["description"] == "5.00 USD off"
    assert {k: body[k] for k in ("id", "code", "campaign_id", "member_id", "status", "min_spend", "stackable")} == {
        "id": v["id"], "code": v["code"], "campaign_id": campaign["id"], "member_id": member, "status": "active",
        "min_spend": 1000, "stackable": True}


# --- anti-enumeration ---------------------------------------------------------------------------------------------

async def test_failed_look_ups_are_limited_per_key_across_quote_commit_and_get(client, clock, make_client, shop):
    store, member = shop
    clock.freeze(clock.now().replace(second=0, microsecond=0))
    real = (await give(client, (await make_campaign(client))["id"], member))["code"]
    pos = make_client(await f.create_key(client, "pos", store))
    lines = [f.line(unit_price=2000)]
    for i in range(4):
        f.assert_problem(await pos.get(f"/v1/vouchers/WRONGCODE{i:04d}"), 404, "voucher_not_found")
    for i in range(3):
        r = await pos.post("/v1/checkout/quote", json=with_vouchers(member, store, lines, [f"BADQUOTE{i:05d}"]))
        f.assert_problem(r, 422, "voucher_not_found")
    for i in range(3):  # a commit that answers 4xx rolls back, but its failed look-up stays counted
        f.assert_problem(await f.commit(pos, with_vouchers(member, store, lines, [f"BADCOMMIT{i:04d}"])),
                         422, "voucher_not_found")
    # Ten failures: the key is now refused every look-up, even of a real code, until the window ends.
    r = await pos.get(f"/v1/vouchers/{real}")
    body = f.assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and body["retry_after"] == int(r.headers["Retry-After"])
    f.assert_problem(await f.commit(pos, with_vouchers(member, store, lines, [real])), 429, "rate_limited")
    # A sale without vouchers is not affected, nor is another key.
    assert (await f.commit(pos, f.basket(member, store, lines))).status_code == 201
    assert (await client.get(f"/v1/vouchers/{real}")).status_code == 200
    clock.advance(timedelta(seconds=61))
    assert (await pos.get(f"/v1/vouchers/{real}")).status_code == 200


@pytest.mark.parametrize("path", ["/v1/checkout/quote", "/v1/checkout/commit"])
async def test_a_named_code_is_screened_with_the_member_and_the_keys_failures_in_one_statement(client, app, shop,
                                                                                            path):
    """The screening's two reads (the key's recent failures, the codes that exist) go out with the member's read
    as one statement on PostgreSQL (``db.prefetch``), on the request's own session: a commit opens no other.
    SQLite runs them one by one. Either way a real code passes."""
    store, member = shop
    campaign = (await make_campaign(client))["id"]
    warm = with_vouchers(member, store, [f.line(unit_price=2000)], [(await give(client, campaign, member))["code"]])
    assert (await client.post("/v1/checkout/quote", json=warm)).status_code == 200  # caches warmed
    code = (await give(client, campaign, member))["code"]
    body = with_vouchers(member, store, [f.line(unit_price=2000)], [code])
    with f.counted_statements(app) as statements:
        r = await (f.commit(client, body) if path.endswith("commit") else client.post(path, json=body))
    assert r.status_code in (200, 201), r.text
    assert [a["id"] for a in r.json()["applied"] if a["kind"] == "voucher"]
    failures = [s for s in statements if "failed_attempts" in s]
    codes = [s for s in statements if "vouchers.code IN" in s or "vouchers.code = ANY" in s]
    assert len(failures) == 1 and codes, statements
    if IS_POSTGRES:
        assert "vouchers" in failures[0] and "FROM members" in failures[0], failures
    else:
        assert "vouchers" not in failures[0], failures
    if IS_POSTGRES and path.endswith("quote"):
        assert len(statements) == 2, statements  # with the tier standing, balances, figures and rewards


async def test_issues_are_announced_as_events_without_bearer_codes(client):
    campaign = await make_campaign(client)
    member = (await f.enroll(client))["id"]
    given = await give(client, campaign["id"], member)
    await issue(client, campaign["id"], count=3)
    r = await client.get("/v1/events", params={"types": "voucher.issued"})
    assert r.status_code == 200, r.text
    issued = [e["data"] for e in r.json()["data"]]
    assert issued == [
        {"campaign_id": campaign["id"], "count": 1, "member_id": member, "voucher_id": given["id"],
         "valid_until": given["valid_until"]},
        {"campaign_id": campaign["id"], "count": 3, "member_id": None},
    ]
    assert all("code" not in data for data in issued)


async def test_a_burst_of_unknown_codes_never_exhausts_the_connection_pool(app, database_url, client):
    """A quote or commit naming an unknown code counts the failure in a transaction of its own. It held its own
    session's connection meanwhile, so a burst of them at one worker held the whole pool, each waiting for a
    second connection, until the pool's 30 s timeout answered 500. Here: one worker, a pool of 2 on PostgreSQL
    (SQLite's is 5 + 10 whatever the settings), a burst larger than that."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    burst = 10 if IS_POSTGRES else 40
    with running_server(database_url, workers=1,
                        env={"LOYALTY_DB_POOL_SIZE": "2", "LOYALTY_DB_MAX_OVERFLOW": "0"}) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120,
                                     limits=httpx.Limits(max_connections=burst)) as c:
            for path, receipt in (("/v1/checkout/quote", {}), ("/v1/checkout/transactions", {"receipt_id": "B"})):
                bodies = [{**f.basket(member, store, redeem={"vouchers": [f"NOPE{i:04d}"]}), **receipt}
                          for i in range(burst)]
                answers = await asyncio.gather(*(c.post(path, json=body, headers={"Idempotency-Key": f.new_key()})
                                                 for body in bodies))
                seen = collections.Counter((a.status_code, a.json()["code"]) for a in answers)
                assert set(seen) <= {(422, "voucher_not_found"), (429, "rate_limited")}, (path, seen)


async def told_at_the_till(client, member: str, store: str, code: str) -> tuple[str, str]:
    """What a quote at ``store`` says of the voucher: its offer's description and its expiry nudge's text."""
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=2000)]))).json()
    offer = next(o for o in q["offers"] if o["kind"] == "voucher" and o["id"] == code)
    nudge = next(n for n in q["nudges"] if n["kind"] == "voucher_expiry" and n["code"] == code)
    return offer["description"], nudge["text"]


async def test_a_voucher_ending_during_a_day_is_told_with_its_hour(client, clock):
    """A 7-day voucher issued at 15:00 (a UTC store) ends at 15:00 on 31 March. The till said "valid until
    2027-03-31" in the morning, and refused it at 18:00 as expired, "its last day was 2027-03-31"."""
    clock.freeze(datetime(2027, 3, 24, 15, 0, tzinfo=UTC))
    store = (await f.create_store(client, tz="UTC"))["id"]
    member = (await f.enroll(client))["id"]
    week = await make_campaign(client, name="Week", valid_days=7)
    code = (await give(client, week["id"], member))["code"]
    clock.freeze(datetime(2027, 3, 31, 9, 0, tzinfo=UTC))
    offer, nudge = await told_at_the_till(client, member, store, code)
    assert offer.endswith("valid until 2027-03-31 15:00") and nudge.endswith("expires on 2027-03-31 15:00")
    clock.freeze(datetime(2027, 3, 31, 18, 0, tzinfo=UTC))
    r = await f.commit(client, with_vouchers(member, store, [f.line(unit_price=2000)], [code]))
    assert "it was valid until 2027-03-31 15:00." in f.assert_problem(r, 409, "voucher_expired")["detail"]


async def test_voucher_dates_are_told_on_the_stores_calendar_and_an_end_as_its_last_day(client, clock):
    """Pago Pago is 11 hours behind UTC: a voucher ending at midnight there on 1 April is valid until 31 March, as
    the quote and the nudge say (its end is on 1 April in UTC). Berlin is ahead: a voucher starting at midnight
    there on 1 March cannot be used before 1 March, as the refusal says at noon on 28 February (its start is on
    28 February in UTC)."""
    behind = (await f.create_store(client, tz="Pacific/Pago_Pago"))["id"]
    ahead = (await f.create_store(client, tz="Europe/Berlin"))["id"]
    member = (await f.enroll(client))["id"]
    clock.freeze(datetime(2027, 2, 28, 11, 0, tzinfo=UTC))
    ending = await make_campaign(client, name="Spring", valid_until="2027-04-01T00:00:00-11:00")
    starting = await make_campaign(client, name="March", valid_from="2027-03-01T00:00:00+01:00")
    kept, later = (await give(client, ending["id"], member))["code"], (await give(client, starting["id"], member))
    r = await f.commit(client, with_vouchers(member, ahead, [f.line(unit_price=2000)], [later["code"]]))
    assert "can be used from 2027-03-01" in f.assert_problem(r, 422, "voucher_not_applicable")["detail"]
    clock.freeze(datetime(2027, 3, 28, 8, 0, tzinfo=UTC))
    offer, nudge = await told_at_the_till(client, member, behind, kept)
    assert offer.endswith("valid until 2027-03-31") and nudge.endswith("expires on 2027-03-31"), (offer, nudge)
