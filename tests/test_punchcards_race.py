"""Two tills redeeming the same punch-card reward at the same moment, through two server processes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.factories import line, unique_email, unique_phone
from tests.server import running_server


@pytest.mark.postgres_only
async def test_two_tills_redeeming_one_reward_at_once_exactly_one_succeeds(app, database_url):
    with running_server(database_url, workers=2) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                     timeout=60) as c:
            r = await c.post("/v1/stores", json={"id": "punch-race", "name": "Race", "timezone": "UTC"})
            assert r.status_code == 201, r.text
            r = await c.post("/v1/punch-card-programs", json={
                "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 1,
                "reward": {}, "reward_valid_days": 30})
            assert r.status_code == 201, r.text
            program = r.json()["id"]
            r = await c.post("/v1/members", json={"name": "Racer", "phone": unique_phone(), "email": unique_email()})
            member = r.json()["id"]
            coffee = line("1", "LATTE", "coffee", 1, 400)
            base_body = {"member": {"member_id": member}, "store_id": "punch-race", "currency": "USD"}
            r = await c.post("/v1/checkout/transactions", json={**base_body, "receipt_id": "earn", "lines": [coffee]},
                             headers={"Idempotency-Key": "earn"})
            assert r.status_code == 201, r.text
            [reward] = r.json()["earned"]["rewards_issued"]

            async def till(i: int) -> httpx.Response:
                body = {**base_body, "receipt_id": f"till-{i}", "lines": [coffee],
                        "redeem": {"punch_rewards": [reward["id"]]}}
                return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": f"till-{i}"})

            answers = await asyncio.gather(till(1), till(2))
            assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
            loser = next(a.json() for a in answers if a.status_code == 409)
            assert loser["code"] == "reward_not_available"
            winner = next(a.json() for a in answers if a.status_code == 201)
            assert winner["totals"]["net"] == 0
            cards = (await c.get(f"/v1/members/{member}/punch-cards")).json()["data"]
            [coffee_card] = [card for card in cards if card["program_id"] == program]
            statuses = {rw["id"]: rw["status"] for rw in coffee_card["rewards"]}
            assert statuses[reward["id"]] == "redeemed"
            assert len(statuses) == 1 and coffee_card["stamps"] == 0  # the free coffee earned no stamp
