"""``GET /v1/members/{id}/summary``: the member and each balance, as their own endpoints answer them."""

from __future__ import annotations

from datetime import timedelta

from tests import factories as f


async def test_summary_shows_points_tier_perks_punch_cards_and_wallet(client, make_client):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    program = await client.post("/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"skus": ["COFFEE"], "categories": []}, "stamps_required": 10,
        "reward": {"skus": ["COFFEE"], "categories": [], "max_value": 500}, "reward_valid_days": 30, "active": True})
    assert program.status_code == 201, program.text
    r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 2_000, "payment_ref": "card-1"},
                          headers={"Idempotency-Key": "summary-top-up"})
    assert r.status_code == 201, r.text
    sale = await f.commit(client, f.basket(member, store, [
        f.line("1", sku="COFFEE", category="coffee", quantity=3, unit_price=450),
        f.line("2", unit_price=160_000)]))  # enough for gold at once
    assert sale.status_code == 201, sale.text

    r = await client.get(f"/v1/members/{member}/summary")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["member"]["id"] == member and body["member"]["tier"] == "gold"
    assert body["points"] == (await client.get(f"/v1/members/{member}/points")).json()
    assert body["points"]["balance"] == sale.json()["earned"]["points"] > 0
    assert body["tier"]["code"] == "gold" and body["tier"]["perks"] == ["Birthday treat", "Free delivery"]
    assert body["tier"] == (await client.get(f"/v1/members/{member}/tier")).json()
    assert [(c["name"], c["stamps"]) for c in body["punch_cards"]] == [("Coffee card", 3)]
    assert body["wallet"] == {"cash": 2_000, "bonus": 0, "total": 2_000, "currency": "USD"}

    till = make_client(await f.create_key(client, "pos", store))
    seen = (await till.get(f"/v1/members/{member}/summary")).json()["member"]
    assert "*" in seen["phone"] and "***@" in seen["email"]
    assert (await client.get("/v1/members/mem_nobody/summary")).json()["code"] == "member_not_found"


async def test_summary_vouchers_are_the_ones_usable_now(client, clock):
    """`vouchers`: the member's vouchers usable now. One valid only from next week is not (it was listed); the
    offers still tell the member of it, not applicable, with the day it starts."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    codes = {}
    for name, starts in (("Now", None), ("Next week", clock.now() + timedelta(days=7))):
        body = {"name": name, "kind": "amount_off", "value": 500,
                **({"valid_from": starts.isoformat()} if starts else {})}
        campaign = (await client.post("/v1/voucher-campaigns", json=body)).json()
        r = await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"member_id": member},
                              headers={"Idempotency-Key": f.new_key()})
        codes[name] = r.json()[0]["code"]
    summary = (await client.get(f"/v1/members/{member}/summary")).json()
    assert [v["code"] for v in summary["vouchers"]] == [codes["Now"]]
    q = (await client.post("/v1/checkout/quote", json=f.basket(member, store, [f.line(unit_price=2_000)]))).json()
    offered = {o["id"]: o for o in q["offers"] if o["kind"] == "voucher"}
    assert offered[codes["Now"]]["applicable"] and not offered[codes["Next week"]]["applicable"]
    assert "can be used from" in offered[codes["Next week"]]["reason"]
    clock.advance(timedelta(days=7))
    summary = (await client.get(f"/v1/members/{member}/summary")).json()
    assert sorted(v["code"] for v in summary["vouchers"]) == sorted(codes.values())
