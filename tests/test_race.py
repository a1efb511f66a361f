"""Concurrency across processes: two server workers, twenty tills spending one balance at the same moment."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.factories import line, new_key, unique_email, unique_phone
from tests.server import run_cli


@pytest.mark.postgres_only
async def test_twenty_tills_spending_one_balance_at_once(server, cli_env):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=60, limits=limits) as c:
        r = await c.post("/v1/stores", json={"id": "race-store", "name": "Race", "timezone": "UTC"})
        assert r.status_code == 201, r.text
        r = await c.post("/v1/members", json={"name": "Racer", "phone": unique_phone(), "email": unique_email()})
        member = r.json()["id"]
        r = await c.post(f"/v1/members/{member}/points/adjustments", json={"amount": 1000, "reason": "race"},
                         headers={"Idempotency-Key": new_key()})
        assert r.status_code == 201, r.text

        async def spend(i: int) -> httpx.Response:
            body = {"receipt_id": f"race-{i}", "member": {"member_id": member}, "store_id": "race-store",
                    "currency": "USD", "lines": [line(unit_price=100_000)], "redeem": {"points": 1000}}
            return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"race-key-{i}"})

        answers = await asyncio.gather(*(spend(i) for i in range(20)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] + [409] * 19, [a.text for a in answers if a.status_code not in (201, 409)]
        assert all(a.json()["code"] == "insufficient_points" for a in answers if a.status_code == 409)

        winner = next(a.json() for a in answers if a.status_code == 201)
        balance = (await c.get(f"/v1/members/{member}/points")).json()["balance"]
        assert balance == winner["balances_after"]["points"] == 1000 - 1000 + 990
        entries = (await c.get(f"/v1/members/{member}/ledger", params={"limit": 500})).json()["data"]
        assert sum(e["amount"] for e in entries) == balance

    assert await run_cli("verify") == 0


@pytest.mark.postgres_only
async def test_same_receipt_and_same_void_from_many_tills_at_once(server, cli_env):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=40)) as c:
        assert (await c.post("/v1/stores", json={"id": "race-2", "name": "Race", "timezone": "UTC"})).status_code == 201
        r = await c.post("/v1/members", json={"name": "Racer", "phone": unique_phone(), "email": unique_email()})
        member = r.json()["id"]
        body = {"receipt_id": "same", "member": {"member_id": member}, "store_id": "race-2", "currency": "USD",
                "lines": [line(unit_price=10_000)]}
        answers = await asyncio.gather(*(
            c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"dup-{i}"})
            for i in range(12)))
        assert sorted(a.status_code for a in answers) == [201] + [409] * 11, [a.text for a in answers]
        assert all(a.json()["code"] == "duplicate_receipt" for a in answers if a.status_code == 409)
        txn = next(a.json()["id"] for a in answers if a.status_code == 201)

        voids = await asyncio.gather(*(
            c.post(f"/v1/checkout/transactions/{txn}/void", headers={"Idempotency-Key": f"void-{i}"})
            for i in range(12)))
        assert sorted(v.status_code for v in voids) == [200] + [409] * 11, [v.text for v in voids]
        assert (await c.get(f"/v1/members/{member}/points")).json()["balance"] == 0


@pytest.mark.postgres_only
async def test_ten_tills_spending_one_wallet_at_once(server, cli_env):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=20)) as c:
        assert (await c.post("/v1/stores", json={"id": "race-w", "name": "Race", "timezone": "UTC"})).status_code == 201
        r = await c.post("/v1/members", json={"name": "Racer", "phone": unique_phone(), "email": unique_email()})
        member = r.json()["id"]
        r = await c.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 1000, "payment_ref": "race"},
                         headers={"Idempotency-Key": new_key()})
        assert r.status_code == 201, r.text

        async def spend(i: int) -> httpx.Response:
            body = {"receipt_id": f"wallet-race-{i}", "member": {"member_id": member}, "store_id": "race-w",
                    "currency": "USD", "lines": [line(unit_price=1500)], "redeem": {"wallet_amount": 1000}}
            return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"wr-{i}"})

        answers = await asyncio.gather(*(spend(i) for i in range(10)))
        assert sorted(a.status_code for a in answers) == [201] + [409] * 9, [a.text for a in answers]
        assert all(a.json()["code"] == "insufficient_funds" for a in answers if a.status_code == 409)
        wallet = (await c.get(f"/v1/members/{member}/wallet")).json()
        assert wallet["total"] == 0 and wallet["cash"] == 0 and wallet["bonus"] == 0

    assert await run_cli("verify") == 0
