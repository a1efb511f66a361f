"""Vouchers under concurrency across two server processes (PostgreSQL): one code redeemed by two tills at once,
issue limits under concurrent issue, and the failed look-up limit shared by the processes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.factories import line, unique_email, unique_phone

pytestmark = pytest.mark.postgres_only


def admin(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)


async def setup(c: httpx.AsyncClient, **campaign) -> tuple[str, list[str]]:
    r = await c.post("/v1/stores", json={"id": "voucher-race", "name": "Race", "timezone": "UTC"})
    assert r.status_code in (201, 409), r.text
    members = []
    for _ in range(2):
        r = await c.post("/v1/members", json={"name": "Racer", "phone": unique_phone(), "email": unique_email()})
        assert r.status_code == 201, r.text
        members.append(r.json()["id"])
    r = await c.post("/v1/voucher-campaigns", json={"name": "Five off", "kind": "amount_off", "value": 500,
                                                    **campaign})
    assert r.status_code == 201, r.text
    return r.json()["id"], members


async def test_two_tills_redeeming_one_code_at_once_exactly_one_succeeds(app, server):
    async with admin(server) as c:
        campaign, (alice, bob) = await setup(c)
        r = await c.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"count": 1},
                         headers={"Idempotency-Key": "bulk"})
        [bearer] = r.json()
        r = await c.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"member_id": alice},
                         headers={"Idempotency-Key": "own"})
        [own] = r.json()

        async def till(name: str, member: str, code: str) -> httpx.Response:
            body = {"member": {"member_id": member}, "store_id": "voucher-race", "currency": "USD",
                    "receipt_id": name, "lines": [line(unit_price=2000)], "redeem": {"vouchers": [code]}}
            return await c.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": name})

        for round_, tills in (("bearer", [("b1", alice, bearer["code"]), ("b2", bob, bearer["code"])]),
                              ("own", [("o1", alice, own["code"]), ("o2", alice, own["code"])])):
            answers = await asyncio.gather(*(till(*t) for t in tills))
            assert sorted(a.status_code for a in answers) == [201, 409], (round_, [a.text for a in answers])
            assert next(a for a in answers if a.status_code == 409).json()["code"] == "voucher_already_used"
        for v in (bearer, own):
            r = await c.get(f"/v1/vouchers/{v['code']}")
            assert r.json()["status"] == "redeemed"


async def test_concurrent_issue_never_passes_the_per_member_or_total_limit(app, server):
    async with admin(server) as c:
        campaign, (alice, _) = await setup(c, per_member_limit=3, total_limit=35)
        answers = await asyncio.gather(*(
            c.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"member_id": alice},
                   headers={"Idempotency-Key": f"member-{i}"}) for i in range(10)))
        assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 7, [a.text for a in answers]
        answers = await asyncio.gather(*(
            c.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"count": 10},
                   headers={"Idempotency-Key": f"bulk-{i}"}) for i in range(6)))
        assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 3, [a.text for a in answers]
        assert (await c.get(f"/v1/voucher-campaigns/{campaign}")).json()["issued_count"] == 33
        listed = (await c.get(f"/v1/members/{alice}/vouchers")).json()["data"]
        assert len(listed) == 3


async def test_the_failed_look_up_limit_holds_across_processes(app, server):
    if time.time() % 60 > 45:  # the burst must fall within one (minute-long, epoch-aligned) window
        await asyncio.sleep(61 - time.time() % 60)
    async with admin(server) as c:
        answers = await asyncio.gather(*(c.get(f"/v1/vouchers/NOSUCHCODE{i:03d}") for i in range(14)))
        statuses = sorted(a.status_code for a in answers)
        # Up to 10 unknown codes are answered; every look-up past them is refused, whichever process took it.
        assert statuses == [404] * 10 + [429] * 4, statuses
        r = await c.get("/v1/vouchers/NOSUCHCODE999")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
