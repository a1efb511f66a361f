"""Different operations on one member's balances at the same moment, on PostgreSQL: a return and the expiry sweep
(held in a chosen order: a lock taken here, as the other's transaction would hold it). Whatever order the database
takes them in, every balance ends where one of the orders leaves it and the ledger's invariants hold."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.points import service as points_service
from tests import factories as f

pytestmark = pytest.mark.postgres_only


async def waiting_on_locks(app, n: int) -> None:
    """Returns once ``n`` statements of the test database wait on a lock."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock'")
    async with asyncio.timeout(10):
        while True:
            async with app.state.db.engine.connect() as probe:
                if (await probe.execute(query)).scalar_one() >= n:
                    return
            await asyncio.sleep(0.02)


async def test_a_return_waiting_on_the_expiry_sweep_claws_back_nothing_the_sweep_took(client, app):
    """The sweep expires a sale's 100 points while the sale's return waits for the member's accounts (the sweep's
    batch holds them). The return must then claw back nothing: the member lost those points once, to expiry. It
    read what the sweep had expired before taking that lock (nothing yet) and clawed back all 100 again, leaving
    the member at -100."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    sale = (await f.commit(client, f.basket(member, store, [f.line(quantity=2, unit_price=5000)]))).json()
    assert sale["earned"]["points"] == 100
    now = datetime.now(UTC)
    async with app.state.db.transaction() as sweep:  # `loyalty sweep` a year and more later, not committed yet
        expired = await points_service.sweep_batch(sweep, now + timedelta(days=400), now)
        assert (expired.members, expired.points) == (1, 100)
        returning = asyncio.create_task(f.return_lines(client, sale["id"], {"1": 2}))
        await waiting_on_locks(app, 1)
    r = await returning
    assert r.status_code == 201, r.text
    assert r.json()["reversed"]["points"] == 0
    assert await f.balance(client, member) == 0
    await f.verify_ledger(app)
