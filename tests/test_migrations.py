"""Migrations that move data, run on a database of their own (SQLite file, or a scratch PostgreSQL database
beside the test database in the PostgreSQL pass)."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from service import migrate
from tests.conftest import DATABASE_URL, IS_POSTGRES


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
