"""Test harness: every test runs against a schema built by the Alembic migrations, on SQLite by default or on
PostgreSQL when ``LOYALTY_TEST_DATABASE_URL`` names one (``.ci/run`` runs both passes). Each test starts from
empty tables; nothing depends on test order.

A PostgreSQL URL that cannot be reached is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service import migrate
from service.app import create_app
from service.auth import service as auth_service
from service.clock import Clock
from service.program import service as program_service
from service.settings import Settings

ADMIN_KEY = "lk_test_admin_key_0123456789abcdef"
GIFT_CARD_PIN_KEY = "test-gift-card-pin-key-0123456789abcdef"
ROOT_DIR = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="loyalty-tests-"))
DATABASE_URL = os.environ.get("LOYALTY_TEST_DATABASE_URL") or f"sqlite+aiosqlite:///{_TMP / 'test.db'}"
IS_POSTGRES = DATABASE_URL.startswith("postgresql")

# Property tests judge answers, never speed: a loaded CI machine (both passes, helpers' servers) once took a pure
# rule's example past Hypothesis' 200 ms deadline. Tests that set their own settings keep them.
hypothesis_settings.register_profile("loyalty", deadline=None)
hypothesis_settings.load_profile("loyalty")


class TravelClock(Clock):
    """Real time plus an offset the test can move forward (or a fixed instant once ``freeze`` is called)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self.frozen: datetime | None = None

    def now(self) -> datetime:
        return self.frozen if self.frozen else datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        if self.frozen:
            self.frozen += delta
        else:
            self.offset += delta

    def freeze(self, at: datetime) -> None:
        self.frozen = at


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL pass of .ci/run")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    except OSError as exc:
        raise RuntimeError(f"PostgreSQL at {url} is not reachable: {exc}") from exc
    finally:
        await engine.dispose()


async def _table_names(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            if IS_POSTGRES:
                rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            else:
                rows = await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name NOT LIKE 'sqlite_%'"))
            return [r[0] for r in rows if r[0] != "alembic_version"]
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url() -> str:
    """The migrated test database (built once per run, by the migrations)."""
    if IS_POSTGRES:
        asyncio.run(_reset_postgres(DATABASE_URL))
    migrate.upgrade(DATABASE_URL)
    return DATABASE_URL


@pytest.fixture(scope="session")
def table_names(database_url: str) -> list[str]:
    return asyncio.run(_table_names(database_url))


async def wipe(url: str, tables: list[str]) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if IS_POSTGRES:
                # DELETE, with the foreign keys' triggers off for this transaction, then the sequences restarted:
                # what TRUNCATE … RESTART IDENTITY did, in about half its time (TRUNCATE makes every table's files
                # anew, 150 to 250 ms for the 30 tables, at every test of the PostgreSQL pass).
                await conn.execute(text("SET LOCAL session_replication_role = replica"))
                for table in tables:
                    await conn.execute(text(f"DELETE FROM {table}"))
                sequences = (await conn.execute(text(
                    "SELECT sequence_name FROM information_schema.sequences "
                    "WHERE sequence_schema = current_schema()"))).scalars().all()
                for sequence in sequences:
                    await conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
            else:
                await conn.execute(text("PRAGMA foreign_keys=OFF"))
                for table in tables:
                    await conn.execute(text(f"DELETE FROM {table}"))
                await conn.execute(text("PRAGMA foreign_keys=ON"))
    finally:
        await engine.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, bootstrap_admin_key=ADMIN_KEY, currency="USD", log_level="WARNING",
                    db_pool_size=5, webhook_worker=False, gift_card_pin_key=GIFT_CARD_PIN_KEY)


@pytest.fixture
def clock() -> TravelClock:
    return TravelClock()


@pytest.fixture
async def app(settings: Settings, clock: TravelClock, table_names: list[str]):
    await wipe(settings.database_url, table_names)
    auth_service.forget_cached_keys()
    program_service.forget_cached()
    application = create_app(settings, clock=clock, log=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of the app, in process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


@pytest.fixture
def make_client(app):
    """``await make_client(key)``: another in-process client of the same app with its own key (or none)."""
    clients: list[httpx.AsyncClient] = []

    def make(key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers)
        clients.append(c)
        return c

    yield make
    for c in clients:
        asyncio.get_event_loop().create_task(c.aclose())


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """``loyalty`` commands run in-process act on the test database."""
    monkeypatch.setenv("LOYALTY_DATABASE_URL", database_url)


@pytest.fixture
def server(app, database_url: str):
    """``loyalty serve --workers 2`` on the test database (``app`` has emptied it and prepared the program)."""
    from tests.server import running_server

    with running_server(database_url, workers=2) as base:
        yield base
