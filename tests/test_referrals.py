"""Referrals through HTTP: the code at enrollment, both sides credited once at the first qualifying sale, retries,
voids, refused codes (SQLite and PostgreSQL). Default program: 500 points each side, first spend of 20.00."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests import factories as f
from tests.conftest import ADMIN_KEY
from tests.server import run_cli


@pytest.fixture
async def store(client):
    return (await f.create_store(client))["id"]


async def buy(client, member, store, amount, key=None, receipt_id=None) -> dict:
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=amount)]), key=key, receipt_id=receipt_id)
    assert r.status_code == 201, r.text
    return r.json()


async def void(client, transaction_id) -> dict:
    r = await client.post(f"/v1/checkout/transactions/{transaction_id}/void", headers={"Idempotency-Key": f.new_key()})
    assert r.status_code == 200, r.text
    return r.json()


async def test_both_sides_are_credited_once_at_the_first_qualifying_sale(client, app, store):
    referrer = await f.enroll(client)
    code = referrer["referral_code"]
    friend = (await f.enroll(client, referral_code=f" {code.lower()} "))["id"]  # as a customer types it
    small = await buy(client, friend, store, 1_999)  # below min_first_spend: nothing yet
    assert small["balances_after"]["points"] == 19 and await f.balance(client, referrer["id"]) == 0
    key = f.new_key()
    q = await client.post("/v1/checkout/quote", json=f.basket(friend, store, [f.line(unit_price=2_000)]))
    assert q.json()["earn"]["bonus_points"] == 0  # a referral is decided at the commit, under its lock
    first = await buy(client, friend, store, 2_000, key=key, receipt_id="first-qualifying")
    assert first["balances_after"]["points"] == 19 + 20 + 500
    assert (first["earned"]["points"], first["earned"]["bonus_points"], small["earned"]["bonus_points"]) == (20, 500, 0)
    assert (await client.get(f"/v1/checkout/transactions/{first['id']}")).json() == first
    assert await f.balance(client, referrer["id"]) == 500
    # the till retries (same key, same body): the first answer, no second reward
    again = await buy(client, friend, store, 2_000, key=key, receipt_id="first-qualifying")
    assert again == first and await f.balance(client, referrer["id"]) == 500
    later = await buy(client, friend, store, 5_000)
    assert later["balances_after"]["points"] == 539 + 50 and await f.balance(client, referrer["id"]) == 500
    kinds = [e["kind"] for e in (await client.get(f"/v1/members/{referrer['id']}/ledger")).json()["data"]]
    assert kinds == ["referral_bonus"]
    await f.verify_ledger(app)


@pytest.mark.postgres_only
async def test_a_referrer_erased_while_the_first_sale_waits_gets_nothing(client, app):
    """The friend's first sale waits for the referrer's accounts; the referrer is erased meanwhile. The sale then
    reads the referrer's status under its lock and credits nothing (it had read it before the lock)."""
    store = (await f.create_store(client))["id"]
    referrer = await f.enroll(client)
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    async with f.row_held(app, "SELECT id FROM ledger_accounts WHERE member_id = :m ORDER BY id FOR UPDATE",
                          m=referrer["id"]) as (release, waiting):
        sale = asyncio.create_task(f.commit(client, f.basket(friend, store, [f.line(unit_price=3000)])))
        await waiting(1)
        assert (await client.delete(f"/v1/members/{referrer['id']}")).status_code == 204
        await release()
        answer = await sale
    assert answer.status_code == 201, answer.text
    assert await f.balance(client, referrer["id"]) == 0
    await f.verify_ledger(app)


async def test_a_void_claws_back_both_sides_and_a_later_sale_may_reward_again(client, app, store):
    referrer = await f.enroll(client)
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    first = await buy(client, friend, store, 3_000)
    assert first["balances_after"]["points"] == 530 and await f.balance(client, referrer["id"]) == 500
    await f.adjust(client, referrer["id"], 10)
    voided = await void(client, first["id"])
    assert voided["balances_after"]["points"] == 0 and await f.balance(client, referrer["id"]) == 10
    second = await buy(client, friend, store, 2_500)
    assert second["balances_after"]["points"] == 525 and await f.balance(client, referrer["id"]) == 510
    # voiding a sale that rewarded nothing changes nothing for the referrer
    third = await buy(client, friend, store, 2_500)
    await void(client, third["id"])
    assert await f.balance(client, referrer["id"]) == 510
    await f.verify_ledger(app)


async def test_returning_everything_claws_back_both_sides_as_a_void_does(client, app, store):
    referrer = await f.enroll(client)
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    lines = [f.line("a", unit_price=1_500), f.line("b", unit_price=2_500)]
    first = (await f.commit(client, f.basket(friend, store, lines))).json()
    assert first["balances_after"]["points"] == 540 and await f.balance(client, referrer["id"]) == 500
    part = await f.return_lines(client, first["id"], {"a": 1})  # 25.00 left, above the first spend: it stands
    assert part.status_code == 201 and part.json()["reversed"]["points"] == 15
    assert await f.balance(client, friend) == 525 and await f.balance(client, referrer["id"]) == 500
    rest = await f.return_lines(client, first["id"], {"b": 1})  # the rest: the reward goes with it
    assert rest.status_code == 201 and rest.json()["reversed"]["points"] == 25 + 500
    assert await f.balance(client, friend) == 0 and await f.balance(client, referrer["id"]) == 0
    reversed_ = (await client.get("/v1/events", params={"types": "referral.reversed"})).json()["data"]
    assert [(e["data"]["member_id"], e["data"]["points"], e["data"]["balance"]) for e in reversed_] == [
        (referrer["id"], 500, 0)]
    second = await buy(client, friend, store, 2_500)  # the next qualifying sale rewards again
    assert second["balances_after"]["points"] == 525 and await f.balance(client, referrer["id"]) == 500
    await f.verify_ledger(app)


async def test_a_return_below_the_first_spend_takes_the_referral_back_once(client, app, store):
    referrer = await f.enroll(client)
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    lines = [f.line("big", unit_price=2_000), f.line("token", unit_price=100)]  # 21.00: the first spend reached
    first = (await f.commit(client, f.basket(friend, store, lines))).json()
    assert first["balances_after"]["points"] == 521 and await f.balance(client, referrer["id"]) == 500
    r = await f.return_lines(client, first["id"], {"big": 1})  # 1.00 left: no longer a qualifying first purchase
    assert r.status_code == 201 and r.json()["reversed"]["points"] == 20 + 500, r.text
    assert await f.balance(client, friend) == 1 and await f.balance(client, referrer["id"]) == 0
    r = await f.return_lines(client, first["id"], {"token": 1})  # the rest: nothing more of the referral to take
    assert r.status_code == 201 and r.json()["reversed"]["points"] == 1, r.text
    assert await f.balance(client, friend) == 0 and await f.balance(client, referrer["id"]) == 0
    second = await buy(client, friend, store, 2_500)  # the next qualifying sale rewards again
    assert second["balances_after"]["points"] == 525 and await f.balance(client, referrer["id"]) == 500
    await f.verify_ledger(app)


async def test_returns_are_judged_against_the_first_spend_the_sale_qualified_under(client, app, store):
    """The friend's 30.00 qualified under a first spend of 20.00; the retailer then raised it to 50.00 for new
    referrals. A 1.00 return, leaving 29.00, took both rewards back (501 points from the friend)."""
    referrer = await f.enroll(client)
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    lines = [f.line("a", unit_price=2_900), f.line("b", "SKU-2", unit_price=100)]
    sale = (await f.commit(client, f.basket(friend, store, lines))).json()
    assert sale["balances_after"]["points"] == 530 and await f.balance(client, referrer["id"]) == 500
    program = (await client.get("/v1/program")).json()
    await f.set_program(client, referral={**program["referral"], "min_first_spend": 5_000})
    r = await f.return_lines(client, sale["id"], {"b": 1})
    assert r.status_code == 201 and r.json()["reversed"]["points"] == 1, r.text
    assert await f.balance(client, referrer["id"]) == 500
    r = await f.return_lines(client, sale["id"], {"a": 1})  # below the 20.00 it qualified under: taken back
    assert r.status_code == 201 and r.json()["reversed"]["points"] == 29 + 500, r.text
    assert await f.balance(client, referrer["id"]) == 0
    await f.verify_ledger(app)


async def test_refused_codes(client, store):
    referrer = await f.enroll(client)
    r = await client.post("/v1/members", json={"name": "Sam", "referral_code": "NOPE1234"})
    f.assert_problem(r, 422, "invalid_referral_code")
    # the same person (the referrer's own phone or email) cannot refer themselves
    r = await client.post("/v1/members", json={"name": "Again", "phone": referrer["phone"],
                                               "referral_code": referrer["referral_code"]})
    f.assert_problem(r, 422, "self_referral")
    r = await client.post("/v1/members", json={"name": "Again", "email": referrer["email"].upper(),
                                               "referral_code": referrer["referral_code"]})
    f.assert_problem(r, 422, "self_referral")
    erased = await f.enroll(client)
    assert (await client.delete(f"/v1/members/{erased['id']}")).status_code == 204
    r = await client.post("/v1/members", json={"name": "Late", "referral_code": erased["referral_code"]})
    f.assert_problem(r, 422, "invalid_referral_code")


async def test_a_referrer_erased_since_gets_nothing_the_friend_still_does(client, store):
    referrer = await f.enroll(client)
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    assert (await client.delete(f"/v1/members/{referrer['id']}")).status_code == 204
    assert (await buy(client, friend, store, 2_000))["balances_after"]["points"] == 520
    assert await f.balance(client, referrer["id"]) == 0


async def test_the_programs_referral_settings(client, store):
    await f.set_program(client, referral={"referrer_points": 0, "referee_points": 100, "min_first_spend": 0})
    referrer = await f.enroll(client)
    friend = (await f.enroll(client, referral_code=referrer["referral_code"]))["id"]
    assert (await buy(client, friend, store, 100))["balances_after"]["points"] == 101
    assert await f.balance(client, referrer["id"]) == 0


@pytest.mark.postgres_only
async def test_ten_tills_at_once_reward_a_referral_once(server, cli_env):
    """Ten first sales of one referred member at the same moment on two server processes: one reward, both
    sides; the segment counts every sale once."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=20)) as c:
        assert (await c.post("/v1/stores", json={"id": "ref-race", "name": "Race", "timezone": "UTC"})).status_code \
            == 201
        referrer = (await c.post("/v1/members", json={"name": "Ref", "phone": f.unique_phone()})).json()
        friend = (await c.post("/v1/members", json={"name": "Friend", "phone": f.unique_phone(),
                                                    "referral_code": referrer["referral_code"]})).json()["id"]

        async def sale(i: int) -> httpx.Response:
            body = {**f.basket(friend, "ref-race", [f.line(unit_price=3_000)]), "receipt_id": f"ref-race-{i}"}
            return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"ref-{i}"})

        answers = await asyncio.gather(*(sale(i) for i in range(10)))
        assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
        assert (await c.get(f"/v1/members/{friend}/points")).json()["balance"] == 10 * 30 + 500
        assert (await c.get(f"/v1/members/{referrer['id']}/points")).json()["balance"] == 500
        segment = (await c.get(f"/v1/members/{friend}/segment")).json()
        assert (segment["frequency"], segment["monetary"]) == (10, 30_000)
    assert await run_cli("verify") == 0
