"""Migrations that move data, run on a database of their own (SQLite file, or a scratch PostgreSQL database
beside the test database in the PostgreSQL pass)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from service import migrate
from service.app import create_app
from service.auth import service as auth_service
from service.clock import Clock
from service.program import service as program_service
from service.settings import Settings
from tests import factories as f
from tests.conftest import ADMIN_KEY, DATABASE_URL, IS_POSTGRES


async def _recreate_postgres(url: str) -> None:
    server = create_async_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = make_url(url).database
    try:
        async with server.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await server.dispose()


@pytest.fixture
def scratch_url(tmp_path) -> str:
    if not IS_POSTGRES:
        return f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
    url = make_url(DATABASE_URL).set(database=f"{make_url(DATABASE_URL).database}_migrations")
    rendered = url.render_as_string(hide_password=False)
    asyncio.run(_recreate_postgres(rendered))
    return rendered


async def _run(url: str, statements: list[tuple[str, dict]]) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = []
            for sql, params in statements:
                rows = await conn.execute(text(sql), params)
                result = rows.all() if rows.returns_rows else result
            return result
    finally:
        await engine.dispose()


def test_0013_names_the_member_of_enrolment_answers_kept_before_it(scratch_url):
    migrate.upgrade(scratch_url, "0012")
    enrolment = json.dumps({"id": "mem_grace", "card_number": "8000000000000018", "name": "Grace"}).encode()
    sale = json.dumps({"id": "txn_1", "member_id": "mem_grace", "totals": {"net": 100}}).encode()
    problem = json.dumps({"code": "member_exists", "detail": "card_number taken"}).encode()
    insert = ("INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, response_status, response_body, "
              "response_type, locked_at, created_at) VALUES ('key_1', :key, 'h', 'completed', :status, :body, "
              "'application/json', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    asyncio.run(_run(scratch_url, [(insert, {"key": "enrol", "status": 201, "body": enrolment}),
                                   (insert, {"key": "sale", "status": 201, "body": sale}),
                                   (insert, {"key": "refused", "status": 409, "body": problem}),
                                   (insert, {"key": "odd", "status": 201, "body": b"\xff \"card_number\" not json"})]))
    migrate.upgrade(scratch_url, "0013")
    rows = asyncio.run(_run(scratch_url, [("SELECT key, subject FROM idempotency_keys ORDER BY key", {})]))
    assert rows == [("enrol", "mem_grace"), ("odd", None), ("refused", None), ("sale", None)]
    migrate.downgrade(scratch_url, "0012")
    migrate.upgrade(scratch_url, "head")


def _receipts(url: str, work) -> dict:
    """Run ``work(client)`` against the app on ``url`` (migrated to head); what it returns."""
    async def run():
        app = create_app(Settings(database_url=url, bootstrap_admin_key=ADMIN_KEY, currency="USD",
                                  log_level="WARNING", webhook_worker=False), clock=Clock(), log=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
                return await work(client)
    auth_service.forget_cached_keys()
    program_service.forget_cached()
    return asyncio.run(run())


def test_0014_fills_in_the_wallet_each_earlier_sale_left(scratch_url):
    migrate.upgrade(scratch_url, "head")

    async def sales(client) -> list[str]:
        store = (await f.create_store(client))["id"]
        member = (await f.enroll(client))["id"]
        other = (await f.enroll(client))["id"]
        ids = []

        async def top_up(who: str, amount: int) -> None:
            r = await client.post(f"/v1/members/{who}/wallet/top-ups", json={"amount": amount, "payment_ref": "m"},
                                  headers={"Idempotency-Key": f.new_key()})
            assert r.status_code == 201, r.text

        async def sale(who: str, wallet: int = 0) -> None:
            body = f.basket(who, store, [f.line(unit_price=500)], **({"redeem": {"wallet_amount": wallet}}
                                                                   if wallet else {}))
            r = await f.commit(client, body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

        await top_up(member, 1000)
        await sale(member, 300)
        await top_up(other, 900)
        await top_up(member, 500)
        await sale(member)
        await sale(other, 400)
        await sale(member, 200)
        assert (await f.void(client, ids[-1])).status_code == 200
        await top_up(member, 100)
        return ids

    async def read(client, ids: list[str]) -> list[int]:
        return [(await client.get(f"/v1/checkout/transactions/{i}")).json()["balances_after"]["wallet"] for i in ids]

    ids = _receipts(scratch_url, sales)
    kept = _receipts(scratch_url, lambda client: read(client, ids))
    assert kept == [700, 1200, 500, 1000]
    migrate.downgrade(scratch_url, "0013")
    migrate.upgrade(scratch_url, "0014")
    assert _receipts(scratch_url, lambda client: read(client, ids)) == kept
