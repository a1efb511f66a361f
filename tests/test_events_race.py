"""PostgreSQL, where transactions commit in any order: the feed never skips an event that commits after a later-
inserted one, and several delivery workers (in one process or in two server processes) never deliver one event
twice."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from service.db import Database
from service.events import delivery
from service.events import service as events_service
from tests import factories as f
from tests.conftest import ADMIN_KEY
from tests.receiver import receiving
from tests.server import running_server

pytestmark = pytest.mark.postgres_only


async def read_on(client, after: str | None) -> tuple[list[dict], str | None]:
    """Everything the feed has after ``after`` now; the new cursor."""
    got = []
    while True:
        r = await client.get("/v1/events", params={"limit": 7, **({"after": after} if after else {})})
        assert r.status_code == 200, r.text
        page = r.json()["data"]
        got += page
        if page:
            after = page[-1]["id"]
        if r.json()["next_cursor"] is None:
            return got, after


async def test_an_event_inserted_first_but_committed_last_is_not_skipped(client, app):
    """Deterministic: transaction A writes its event first, B writes one later and commits first; a reader in
    between sees B's, and then A's after its cursor."""
    db = app.state.db
    async with db.transaction() as first:
        await events_service.emit(first, "member.erased", {"member_id": "mem_a"}, at=app.state.clock.now())
        async with db.transaction() as second:
            await events_service.emit(second, "member.erased", {"member_id": "mem_b"}, at=app.state.clock.now())
        seen, cursor = await read_on(client, None)
        assert [e["data"]["member_id"] for e in seen] == ["mem_b"]
    more, _ = await read_on(client, cursor)
    assert [e["data"]["member_id"] for e in more] == ["mem_a"]


async def test_the_feed_never_skips_under_concurrent_commits(client, server):
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                 timeout=30) as api:
        store = (await f.create_store(api))["id"]
        members = [(await f.enroll(api))["id"] for _ in range(6)]
        _, cursor = await read_on(api, None)
        committed: list[str] = []
        done = asyncio.Event()

        async def till(n: int) -> None:
            rng = random.Random(n)
            for _ in range(12):
                body = f.basket(rng.choice(members), store, [f.line(unit_price=rng.randint(100, 5000))])
                r = await f.commit(api, body)
                assert r.status_code == 201, r.text
                committed.append(r.json()["id"])

        seen: list[dict] = []

        async def poller() -> None:
            nonlocal cursor
            while not done.is_set():
                got, cursor = await read_on(api, cursor)
                seen.extend(got)
                await asyncio.sleep(0.005)

        polling = asyncio.create_task(poller())
        await asyncio.gather(*(till(n) for n in range(6)))
        done.set()
        await polling
        got, cursor = await read_on(api, cursor)
        seen.extend(got)

        ids = [e["id"] for e in seen]
        assert len(ids) == len(set(ids)), "an event was read twice"
        assert sorted(e["data"]["id"] for e in seen if e["type"] == "transaction.committed") == sorted(committed)
        # The order read while transactions were committing is the feed's order afterwards: stable.
        everything, _ = await read_on(api, None)
        assert [e["id"] for e in everything][-len(ids):] == ids


async def test_two_workers_never_deliver_one_event_twice(client, app, database_url):
    with receiving() as receiver:
        receiver.delay = 0.02
        r = await client.post("/v1/webhooks", json={"url": receiver.url})
        assert r.status_code == 201, r.text
        for _ in range(40):
            await f.enroll(client)
        workers = [Database(database_url, pool_size=3) for _ in range(3)]
        try:
            async def work(db: Database) -> int:
                total = 0
                async with delivery.http_client() as http:
                    for _ in range(400):
                        if len(receiver.requests) >= 40:
                            break
                        attempted = await delivery.deliver_once(db, app.state.clock, http, limit=5)
                        total += attempted
                        if not attempted:
                            await asyncio.sleep(0.01)
                return total

            counts = await asyncio.gather(*(work(db) for db in workers))
        finally:
            for db in workers:
                await db.dispose()
        ids = receiver.event_ids()
        assert len(ids) == len(set(ids)) == sum(counts) == 40
        assert sum(1 for c in counts if c) >= 2, counts  # the work really was shared


async def test_two_server_processes_deliver_each_event_once(app, database_url):
    with receiving() as receiver, running_server(
            database_url, workers=2,
            env={"LOYALTY_WEBHOOK_WORKER": "true", "LOYALTY_WEBHOOK_POLL_SECONDS": "0.02"}) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                     timeout=30) as api:
            r = await api.post("/v1/webhooks", json={"url": receiver.url})
            assert r.status_code == 201, r.text
            await asyncio.gather(*(f.enroll(api) for _ in range(30)))
            deadline = time.monotonic() + 60  # generous: a loaded CI machine delivers slowly, never twice
            for _ in range(1200):
                if len(receiver.requests) >= 30 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a duplicate would arrive about now
        ids = receiver.event_ids()
        assert len(ids) == len(set(ids)) == 30
