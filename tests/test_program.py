"""The program's configuration (versioned, validated) and the retailer's stores, through HTTP."""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from service.audit import AuditEntry
from tests import factories as f
from tests.factories import assert_problem, create_key, create_store, enroll, new_key


async def get_program(client) -> dict:
    r = await client.get("/v1/program")
    assert r.status_code == 200, r.text
    return r.json()


async def audit_actions(app) -> list[tuple[str, str | None]]:
    async with app.state.db.session(write=False) as session:
        rows = (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()
        return [(row.action, row.target) for row in rows]


# --- the default program ------------------------------------------------------------------------------------------

async def test_default_program(client):
    p = await get_program(client)
    assert p["version"] == 1
    assert p["currency"] == "USD"
    assert p["point_value"] >= 1 and p["max_burn_percent"] == 100
    assert p["earn"]["base_rate_per_major_unit"] > 0
    spends = [t["min_qualifying_spend"] for t in p["tiers"]]
    assert spends[0] == 0 and spends == sorted(spends) and len(set(spends)) == len(spends)
    assert p["tiers"][0]["code"] == "member"
    assert len({t["code"] for t in p["tiers"]}) == len(p["tiers"]) >= 2
    assert all(t["earn_multiplier"] > 0 for t in p["tiers"])
    assert p["referral"].keys() >= {"referrer_points", "referee_points", "min_first_spend"}
    assert datetime.fromisoformat(p["updated_at"]).utcoffset() == timedelta(0)


# --- PUT ----------------------------------------------------------------------------------------------------------

async def test_put_round_trip(client, app, clock):
    p = await get_program(client)
    clock.advance(timedelta(minutes=5))
    changed = copy.deepcopy(p)
    changed["point_value"] = 2
    changed["max_burn_percent"] = 50
    changed["tiers"].append({"code": "platinum", "name": "Platinum", "min_qualifying_spend": 1_000_000,
                             "earn_multiplier": 2, "discount_percent": 10, "perks": ["Lounge"]})
    changed["earn"]["category_multipliers"] = {"coffee": 2}
    changed["earn"]["bonus_events"] = [{"name": "Double days", "starts_at": "2030-01-01T00:00:00+08:00",
                                        "ends_at": "2030-01-08T00:00:00+08:00", "multiplier": 2,
                                        "categories": ["coffee"]}]
    changed["greetings"] = {"en": {"birthday": "Happy birthday, {name}!"}, "zh-CN": {"birthday": "生日快乐，{name}！"}}
    changed["wallet_top_up_bonuses"] = [{"min_amount": 10_000, "bonus": 500}]
    r = await client.put("/v1/program", json=changed)
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["version"] == 2
    assert after["point_value"] == 2 and after["max_burn_percent"] == 50
    assert [t["code"] for t in after["tiers"]][-1] == "platinum"
    assert after["earn"]["category_multipliers"] == {"coffee": 2}
    event = after["earn"]["bonus_events"][0]  # stored and shown in UTC, as every time of the API
    assert (event["starts_at"], event["ends_at"]) == ("2029-12-31T16:00:00Z", "2030-01-07T16:00:00Z")
    assert after["greetings"]["zh-CN"]["birthday"] == "生日快乐，{name}！"
    assert datetime.fromisoformat(after["updated_at"]) > datetime.fromisoformat(p["updated_at"])
    assert await get_program(client) == after
    assert ("program.updated", "2") in await audit_actions(app)


async def test_get_body_sent_back_unchanged_is_accepted(client):
    p = await get_program(client)
    for expected in (2, 3):
        r = await client.put("/v1/program", json=p)
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["version"] == expected


async def test_put_without_read_only_fields_is_accepted(client):
    p = await get_program(client)
    del p["updated_at"]
    p["currency"] = "EUR"
    r = await client.put("/v1/program", json=p)
    assert r.status_code == 200, r.text
    assert r.json()["currency"] == "EUR"


async def test_the_currency_stays_while_wallets_or_gift_cards_hold_money(client):
    member = (await enroll(client))["id"]
    r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 1250, "payment_ref": "t"},
                          headers={"Idempotency-Key": new_key()})
    assert r.status_code == 201, r.text
    p = await get_program(client)
    r = await client.put("/v1/program", json={**p, "currency": "EUR"})
    assert "12.50 USD" in assert_problem(r, 409, "currency_in_use")["detail"]
    assert (await get_program(client))["version"] == p["version"]  # nothing changed
    r = await client.put("/v1/program", json={**p, "point_value": 2})  # any other change goes ahead
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/members/{member}/wallet/cash-out", headers={"Idempotency-Key": new_key()})
    assert r.status_code == 200, r.text
    p = await get_program(client)
    r = await client.put("/v1/program", json={**p, "currency": "EUR"})  # nothing held now
    assert r.status_code == 200 and r.json()["currency"] == "EUR"


async def test_the_currency_stays_while_a_sale_could_give_stored_value_back(client):
    """A card and a wallet spent to nothing on a sale, the currency changed to JPY, the sale voided: the card held
    1000 (10.00 USD) as 1000 JPY, and both paid a JPY basket of 1500 in full."""
    from tests.factories import commit, create_store
    from tests.test_giftcards import issue_one, pay, tender

    store = (await create_store(client))["id"]
    member = (await enroll(client))["id"]
    r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 500, "payment_ref": "t"},
                          headers={"Idempotency-Key": new_key()})
    assert r.status_code == 201, r.text
    card = await issue_one(client, 1000)
    sale = await commit(client, pay(member, store, [{"line_id": "1", "sku": "S", "category": "c", "quantity": 1,
                                                      "unit_price": 1500}], [tender(card)], wallet=500))
    assert sale.status_code == 201 and sale.json()["totals"]["payable"] == 0, sale.text
    p = await get_program(client)
    r = await client.put("/v1/program", json={**p, "currency": "JPY"})
    assert "15.00 USD" in assert_problem(r, 409, "currency_in_use")["detail"]
    r = await client.post(f"/v1/checkout/transactions/{sale.json()['id']}/returns",
                          json={"lines": [{"line_id": "1", "quantity": 1}]}, headers={"Idempotency-Key": new_key()})
    assert r.status_code == 201, r.text  # everything given back: held again, so still refused
    assert_problem(await client.put("/v1/program", json={**p, "currency": "JPY"}), 409, "currency_in_use")


async def test_put_fills_defaults_for_optional_sections(client):
    p = await get_program(client)
    minimal = {"version": p["version"], "currency": "JPY",
               "tiers": [{"code": "base", "name": "Base", "min_qualifying_spend": 0}]}
    r = await client.put("/v1/program", json=minimal)
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["tiers"][0]["earn_multiplier"] == 1 and after["max_burn_percent"] == 100
    assert after["currency"] == "JPY"


async def test_stale_version_is_409(client):
    p = await get_program(client)
    assert (await client.put("/v1/program", json=p)).status_code == 200
    stale = {**p, "point_value": 7}
    body = assert_problem(await client.put("/v1/program", json=stale), 409, "version_conflict")
    assert "2" in body["detail"]
    assert (await get_program(client))["point_value"] == p["point_value"]
    future = {**p, "version": 99}
    assert_problem(await client.put("/v1/program", json=future), 409, "version_conflict")
    assert (await get_program(client))["version"] == 2


async def test_a_put_whose_commit_fails_leaves_nothing_of_it_in_the_processs_copies(client, monkeypatch):
    """``update`` parses the new row (``return await get(session)``) and caches it in ``_parsed`` under version+1
    before the transaction commits. If the commit then fails (simulated here; in production a lost connection, a
    busy SQLite database after the retries, a PostgreSQL error at COMMIT), that version never existed, but the
    process keeps its parse: the next successful PUT (another admin's, through any process) gets the same version
    number and this process answers, and prices every sale, with the configuration that was rolled back."""
    import service.routing as routing

    p = await get_program(client)
    real_close = routing._close_session
    failed = []

    async def close_failing_once(request, *, commit):
        if commit and not failed and request.method == "PUT":
            failed.append(True)
            await real_close(request, commit=False)  # the commit did not happen
            raise RuntimeError("simulated failure at COMMIT")
        await real_close(request, commit=commit)

    monkeypatch.setattr(routing, "_close_session", close_failing_once)
    with pytest.raises(RuntimeError):
        await client.put("/v1/program", json={**copy.deepcopy(p), "point_value": 7})
    assert failed
    monkeypatch.setattr(routing, "_close_session", real_close)

    r = await client.put("/v1/program", json={**copy.deepcopy(p), "point_value": 3})  # another admin's change
    assert r.status_code == 200, r.text
    assert r.json()["version"] == p["version"] + 1
    assert r.json()["point_value"] == 3, ("PUT answered", r.json()["point_value"])
    assert (await get_program(client))["point_value"] == 3


async def test_concurrent_puts_with_the_same_version_one_wins(client):
    p = await get_program(client)
    results = await asyncio.gather(*(client.put("/v1/program", json={**p, "point_value": v}) for v in (3, 4)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409], [r.text for r in results]
    winner = next(r for r in results if r.status_code == 200).json()
    assert await get_program(client) == winner
    assert winner["version"] == 2


def _mutate(p: dict, how: str) -> dict:
    p = copy.deepcopy(p)
    tiers = p["tiers"]
    if how == "tiers_not_ascending":
        tiers[1]["min_qualifying_spend"], tiers[2]["min_qualifying_spend"] = 150_000, 50_000
    elif how == "tiers_equal_spend":
        tiers[2]["min_qualifying_spend"] = tiers[1]["min_qualifying_spend"]
    elif how == "first_tier_not_zero":
        tiers[0]["min_qualifying_spend"] = 1
    elif how == "duplicate_codes":
        tiers[2]["code"] = tiers[1]["code"]
    elif how == "no_tiers":
        p["tiers"] = []
    elif how.startswith("currency="):
        p["currency"] = how.split("=", 1)[1]
    elif how == "tier_multiplier_zero":
        tiers[1]["earn_multiplier"] = 0
    elif how == "tier_multiplier_negative":
        tiers[1]["earn_multiplier"] = -1.5
    elif how == "category_multiplier_zero":
        p["earn"]["category_multipliers"] = {"coffee": 0}
    elif how == "sku_multiplier_negative":
        p["earn"]["sku_multipliers"] = {"SKU-1": -2}
    elif how == "bonus_multiplier_zero":
        p["earn"]["bonus_events"] = [{"name": "B", "starts_at": "2030-01-01T00:00:00Z",
                                      "ends_at": "2030-01-02T00:00:00Z", "multiplier": 0}]
    elif how == "bonus_naive_times":
        p["earn"]["bonus_events"] = [{"name": "B", "starts_at": "2030-01-01T00:00:00",
                                      "ends_at": "2030-01-02T00:00:00", "multiplier": 2}]
    elif how == "bonus_times_as_numbers":  # seconds since 1970 (2030-01-01, -02): the schema says date-time text
        p["earn"]["bonus_events"] = [{"name": "B", "starts_at": 1893456000, "ends_at": 1893542400, "multiplier": 2}]
    elif how == "bonus_times_as_digits":  # the same, as strings of digits
        p["earn"]["bonus_events"] = [{"name": "B", "starts_at": "1893456000", "ends_at": "1893542400",
                                      "multiplier": 2}]
    elif how == "bonus_ends_before_start":
        p["earn"]["bonus_events"] = [{"name": "B", "starts_at": "2030-01-02T00:00:00Z",
                                      "ends_at": "2030-01-01T00:00:00Z", "multiplier": 2}]
    elif how == "max_burn_101":
        p["max_burn_percent"] = 101
    elif how == "max_burn_negative":
        p["max_burn_percent"] = -1
    elif how == "point_value_zero":
        p["point_value"] = 0
    elif how == "discount_over_100":
        tiers[2]["discount_percent"] = 100.5
    elif how == "unknown_field":
        p["pointz_value"] = 1
    elif how == "unknown_nested_field":
        tiers[0]["colour"] = "blue"
    elif how == "duplicate_top_up_thresholds":
        p["wallet_top_up_bonuses"] = [{"min_amount": 100, "bonus": 1}, {"min_amount": 100, "bonus": 2}]
    elif how == "missing_version":
        del p["version"]
    elif how == "missing_currency":
        del p["currency"]
    else:
        raise AssertionError(how)
    return p


INVALID_PROGRAMS = [
    "tiers_not_ascending", "tiers_equal_spend", "first_tier_not_zero", "duplicate_codes", "no_tiers", "currency=XYZ",
    "currency=usd", "currency=US", "currency=", "tier_multiplier_zero", "tier_multiplier_negative",
    "category_multiplier_zero", "sku_multiplier_negative", "bonus_multiplier_zero", "bonus_naive_times",
    "bonus_times_as_numbers", "bonus_times_as_digits", "bonus_ends_before_start", "max_burn_101",
    "max_burn_negative", "point_value_zero",
    "discount_over_100", "unknown_field", "unknown_nested_field", "duplicate_top_up_thresholds", "missing_version",
    "missing_currency",
]


@pytest.mark.parametrize("part", range(3))
async def test_invalid_program_is_422(client, part):
    p = await get_program(client)
    for how in INVALID_PROGRAMS[part::3]:
        r = await client.put("/v1/program", json=_mutate(p, how))
        assert r.status_code == 422, (how, r.text)
        body = assert_problem(r, 422, "validation_error")
        assert body["errors"]
    assert await get_program(client) == p


async def test_valid_currencies_are_accepted(client):
    p = await get_program(client)
    for currency in ("EUR", "JPY", "GBP", "CNY", "KWD", "USD"):
        r = await client.put("/v1/program", json={**p, "currency": currency})
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["currency"] == currency


# --- stores -------------------------------------------------------------------------------------------------------

async def test_create_store(client, app):
    r = await client.post("/v1/stores", json={"id": "berlin-01", "name": "Berlin Mitte", "timezone": "Europe/Berlin"})
    assert r.status_code == 201, r.text
    store = r.json()
    assert (store["id"], store["name"], store["timezone"]) == ("berlin-01", "Berlin Mitte", "Europe/Berlin")
    assert datetime.fromisoformat(store["created_at"]).utcoffset() == timedelta(0)
    listed = (await client.get("/v1/stores")).json()
    assert listed == {"data": [store], "next_cursor": None}
    assert ("store.created", "berlin-01") in await audit_actions(app)


async def test_store_id_is_generated_and_timezone_defaults_to_utc(client):
    r = await client.post("/v1/stores", json={"name": "Anywhere"})
    assert r.status_code == 201, r.text
    assert r.json()["id"].startswith("sto_") and r.json()["timezone"] == "UTC"


async def test_duplicate_store_is_409(client):
    await create_store(client, "dup-1")
    assert_problem(await client.post("/v1/stores", json={"id": "dup-1", "name": "Again"}), 409, "store_exists")
    stores = (await client.get("/v1/stores")).json()["data"]
    assert [s["name"] for s in stores] == ["Store dup-1"]


async def test_bad_timezone_is_422(client):
    for tz in ("Mars/Olympus", "Europe/Berlinn", "CET+1", "", "europe/berlin", "../UTC", "Europe", 5, None):
        r = await client.post("/v1/stores", json={"id": "s-tz", "name": "S", "timezone": tz})
        assert r.status_code == 422, tz
        assert_problem(r, 422, "validation_error")
    assert (await client.get("/v1/stores")).json()["data"] == []


async def test_good_timezones_are_accepted(client):
    for tz in ("UTC", "Asia/Shanghai", "America/Argentina/Buenos_Aires", "Etc/GMT+5"):
        assert (await create_store(client, tz=tz))["timezone"] == tz


async def test_list_stores_pages(client):
    ids = sorted([(await create_store(client, f"st-{i:02d}"))["id"] for i in range(7)])
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"after": after} if after else {})
        page = (await client.get("/v1/stores", params=params)).json()
        pages += 1
        assert len(page["data"]) <= 3
        seen += [s["id"] for s in page["data"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == ids and pages == 3
    assert (await client.get("/v1/stores", params={"limit": 7})).json()["next_cursor"] == "st-06"
    assert (await client.get("/v1/stores", params={"after": "st-06"})).json() == {"data": [], "next_cursor": None}
    assert_problem(await client.get("/v1/stores", params={"limit": 501}), 422, "validation_error")


# --- who may do what ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["pos", "app"])
async def test_pos_and_app_read_but_do_not_change(client, make_client, role):
    store = await create_store(client)
    c = make_client(await create_key(client, role, store["id"] if role == "pos" else None))
    p = await get_program(c)
    assert p == await get_program(client)
    assert [s["id"] for s in (await c.get("/v1/stores")).json()["data"]] == [store["id"]]
    assert_problem(await c.put("/v1/program", json={**p, "point_value": 9}), 403, "forbidden")
    assert_problem(await c.post("/v1/stores", json={"id": "mine", "name": "Mine"}), 403, "forbidden")
    assert (await get_program(client))["version"] == 1
    assert [s["id"] for s in (await client.get("/v1/stores")).json()["data"]] == [store["id"]]


async def test_catalog_copies_follow_changes_made_by_another_process(client, server):
    """Each process keeps stores, punch card programs and threshold campaigns in memory, checked against the
    catalog version on every request: a change made through another process shows at this one's next sale."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    sale = f.basket(member, store, [f.line("1", "LATTE", "coffee", 1, 400)])
    quoted = await client.post("/v1/checkout/quote", json=sale)
    assert quoted.status_code == 200 and quoted.json()["earn"]["stamps"] == [], quoted.text  # copied here now
    async with httpx.AsyncClient(base_url=server, headers=client.headers, timeout=30) as other:
        r = await other.post("/v1/punch-card-programs", json={
            "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 5,
            "reward": {"categories": ["coffee"]}, "reward_valid_days": 30})
        assert r.status_code == 201, r.text
        punch_card = r.json()
        r = await other.post("/v1/voucher-campaigns", json={
            "name": "Spend 3, get 1 off", "kind": "amount_off", "value": 100, "valid_days": 30,
            "auto_issue": {"spend_threshold": 300}})
        assert r.status_code == 201, r.text
    committed = await f.commit(client, sale)
    assert committed.status_code == 201, committed.text
    earned = committed.json()["earned"]
    assert earned["stamps"] == [{"program_id": punch_card["id"], "stamps": 1}]
    assert [v["campaign_id"] for v in earned["vouchers_issued"]] == [r.json()["id"]]
    async with httpx.AsyncClient(base_url=server, headers=client.headers, timeout=30) as other:
        r = await other.put(f"/v1/punch-card-programs/{punch_card['id']}",
                            json={**{k: punch_card[k] for k in ("name", "qualifying", "stamps_required", "reward",
                                                                 "reward_valid_days")}, "active": False})
        assert r.status_code == 200, r.text
    quoted = await client.post("/v1/checkout/quote", json=sale)
    assert quoted.json()["earn"]["stamps"] == [], quoted.text


async def test_a_look_up_reads_the_program_as_another_process_left_it(client, server):
    """A look-up by card reads the program's version in the same statement as the member (one round trip): a
    program changed through another process shows at this one's next look-up."""
    member = await f.enroll(client)
    r = await client.get("/v1/members", params={"card_number": member["card_number"]})
    assert r.status_code == 200 and r.json()["data"][0]["tier"] == "member", r.text  # parsed here now
    async with httpx.AsyncClient(base_url=server, headers=client.headers, timeout=30) as other:
        program = (await other.get("/v1/program")).json()
        program["tiers"][0].update(code="basic", name="Basic")
        r = await other.put("/v1/program", json={k: v for k, v in program.items() if k not in ("updated_at",)})
        assert r.status_code == 200, r.text
    r = await client.get("/v1/members", params={"card_number": member["card_number"]})
    assert r.json()["data"][0]["tier"] == "basic", r.text
