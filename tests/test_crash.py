"""Crash test: tills keep committing sales while the server (master and both workers) is killed with SIGKILL at
random moments and started again; each till retries a sale with the same Idempotency-Key and body until it is
acknowledged. Afterwards every acknowledged sale exists exactly once, no sale was committed twice, every points
balance is what the acknowledged sales imply, and ``loyalty verify`` passes.

Why it holds: the sale and its remembered answer commit together in one transaction, which holds the key by an
advisory lock meanwhile; a killed process's connection drops, PostgreSQL lets go of its locks and rolls its work
back, and the retry runs at once. The claim's lapse (``LOYALTY_IDEMPOTENCY_LOCK_SECONDS``, what a retry waited
for when a key was a claimed record) is left at its 60 s: a till whose retry had to wait for it would hear
``request_in_progress`` for a minute after each kill, and the run would take that much longer. The unique
``(store_id, receipt_id)`` catches whatever gets past the key.

``LOYALTY_CRASH_KILLS`` sets the number of kills (10 in the suite; ``make soak`` runs 200).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from math import floor

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import ADMIN_KEY
from tests.factories import line, set_program, unique_email, unique_phone
from tests.server import KillableServer, run_cli

KILLS = int(os.environ.get("LOYALTY_CRASH_KILLS", "10"))
TILLS = 4
MEMBERS = 3
START_POINTS = 1_000_000
STORE = "crash-store"


@dataclass
class Sale:
    receipt_id: str
    key: str
    member: str
    unit_price: int
    burn: int
    attempts: int = 0
    answer: dict | None = None

    def body(self) -> dict:
        return {"receipt_id": self.receipt_id, "member": {"member_id": self.member}, "store_id": STORE,
                "currency": "USD", "lines": [line("1", quantity=2, unit_price=self.unit_price)],
                "redeem": {"points": self.burn}}

    @property
    def earned(self) -> int:  # one tier, 1 point per major unit of the net after the burn
        return floor((2 * self.unit_price - self.burn) / 100)


@dataclass
class Till:
    number: int
    sales: list[Sale] = field(default_factory=list)
    retries: int = 0


async def commit_until_acknowledged(c: httpx.AsyncClient, sale: Sale, till: Till) -> None:
    """What a till does: send, and on any failure to get an answer (connection refused or reset, timeout, 5xx,
    ``request_in_progress``) send the very same request again."""
    while True:
        sale.attempts += 1
        try:
            r = await c.post("/v1/checkout/transactions", json=sale.body(), headers={"Idempotency-Key": sale.key})
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 201:
            sale.answer = r.json()
            return
        if r is not None and not (r.status_code >= 500 or (r.status_code == 409 and
                                                            r.json()["code"] == "request_in_progress")):
            raise AssertionError(f"sale {sale.receipt_id} attempt {sale.attempts}: {r.status_code} {r.text}")
        till.retries += 1
        await asyncio.sleep(random.uniform(0.05, 0.3))


async def run_till(base: str, till: Till, members: list[str], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                 timeout=httpx.Timeout(10, connect=2)) as c:
        n = 0
        while not stop.is_set():
            n += 1
            sale = Sale(f"t{till.number}-{n}", f"crash-{till.number}-{n}", random.choice(members),
                        random.choice([100, 450, 1999, 12_500]), random.choice([0, 0, 10, 150]))
            till.sales.append(sale)
            await commit_until_acknowledged(c, sale, till)


async def killer(server: KillableServer, kills: int, stop: asyncio.Event) -> None:
    for _ in range(kills):
        await asyncio.sleep(random.uniform(0.3, 1.5))  # load runs meanwhile
        server.kill()
        await asyncio.sleep(random.uniform(0, 0.3))
        await asyncio.to_thread(server.start)
    await asyncio.sleep(1)
    stop.set()


@pytest.mark.postgres_only
async def test_sales_survive_the_server_being_killed(app, client, database_url: str, cli_env) -> None:
    await set_program(client, tiers=(await client.get("/v1/program")).json()["tiers"][:1])
    assert (await client.post("/v1/stores", json={"id": STORE, "name": "Crash", "timezone": "UTC"})).status_code == 201
    members = []
    for _ in range(MEMBERS):
        r = await client.post("/v1/members", json={"name": "Crash", "phone": unique_phone(), "email": unique_email()})
        members.append(r.json()["id"])
        r = await client.post(f"/v1/members/{members[-1]}/points/adjustments",
                              json={"amount": START_POINTS, "reason": "crash test"},
                              headers={"Idempotency-Key": f"crash-start-{members[-1]}"})
        assert r.status_code == 201, r.text

    server = KillableServer(database_url, env={"LOYALTY_DB_POOL_SIZE": "5"})
    await asyncio.to_thread(server.start)
    tills = [Till(i) for i in range(TILLS)]
    stop = asyncio.Event()
    try:
        await asyncio.gather(killer(server, KILLS, stop), *(run_till(server.base, t, members, stop) for t in tills))
        sales = [s for t in tills for s in t.sales]
        assert all(s.answer for s in sales)
        assert sum(t.retries for t in tills) >= KILLS, "the kills should have interrupted some requests"

        # every acknowledged sale exists exactly once, with what was acknowledged; nothing else was committed
        async with httpx.AsyncClient(base_url=server.base, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                     timeout=30) as c:
            for sale in random.sample(sales, min(len(sales), 30)):
                r = await c.get(f"/v1/checkout/transactions/{sale.answer['id']}")
                assert r.status_code == 200 and r.json()["receipt_id"] == sale.receipt_id, r.text
                replay = await c.post("/v1/checkout/transactions", json=sale.body(),
                                      headers={"Idempotency-Key": sale.key})
                assert replay.status_code == 201 and replay.json() == sale.answer, replay.text
            for member in members:
                implied = START_POINTS + sum(s.earned - s.burn for s in sales if s.member == member)
                assert (await c.get(f"/v1/members/{member}/points")).json()["balance"] == implied
    finally:
        server.stop()

    async with app.state.db.transaction(write=False) as session:
        committed = dict((await session.execute(text(
            "SELECT receipt_id, id FROM checkout_transactions WHERE store_id = :s"), {"s": STORE})).all())
        postings = (await session.execute(text(
            "SELECT count(*) FROM ledger_transactions WHERE kind = 'checkout'"))).scalar_one()
    assert committed == {s.receipt_id: s.answer["id"] for s in sales}
    assert postings == len(sales)
    assert all(s.answer["earned"]["points"] == s.earned for s in sales)
    assert await run_cli("verify") == 0
