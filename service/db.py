"""Database access: the engine, sessions and the one transaction helper.

SQLite (aiosqlite, WAL, foreign keys on) is the embedded default; PostgreSQL (asyncpg) is production. The
schema belongs to Alembic (``migrations/``); nothing here creates tables.

SQLite serializes writers. A transaction that will write starts with ``BEGIN IMMEDIATE`` so it takes the write
lock up front instead of failing half-way when it upgrades from reading to writing; read-only transactions
start deferred and run beside it (WAL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import TypeVar

from sqlalchemy import DateTime, Executable, Table, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from service.clock import utc

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE = "loyalty_write"  # execution option: this transaction will write (BEGIN IMMEDIATE on SQLite)
MAX_ATTEMPTS = 4


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both engines (SQLite keeps no offset; PostgreSQL uses ``timestamptz``)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else utc(value)


def dialect_of(session: AsyncSession) -> str:
    """The session's database: ``"postgresql"`` or ``"sqlite"`` (sessions are always bound to the engine)."""
    return session.bind.dialect.name


def dialect_insert(session: AsyncSession):
    """The session's dialect's ``insert`` (PostgreSQL's and SQLite's both have ``on_conflict_do_…``)."""
    return sqlite_insert if dialect_of(session) == "sqlite" else postgresql_insert


def prebuilt(build: Callable[[Callable], Executable]) -> Callable[[AsyncSession], Executable]:
    """A hot statement built once per dialect, its values left as ``bindparam``s for ``session.execute(stmt,
    params)``. Building a Core statement costs more than running it (an upsert with CASE clauses: about 1.4 ms
    to build, 0.45 ms to run on PostgreSQL), so the checkout's statements are built once and reused.

    ``build`` receives the dialect's ``insert`` (for ``on_conflict_do_…``) and returns the statement::

        _count = prebuilt(lambda insert: insert(table).values(id=bindparam("id"))...)
        await session.execute(_count(session), {"id": ...})
    """
    built: dict[str, Executable] = {}

    def statement(session: AsyncSession) -> Executable:
        dialect = dialect_of(session)
        found = built.get(dialect)
        if found is None:
            found = built[dialect] = build(sqlite_insert if dialect == "sqlite" else postgresql_insert)
        return found

    return statement


def insert_ignoring_duplicates(session: AsyncSession, table: Table):
    """``INSERT … ON CONFLICT DO NOTHING``: a row a unique constraint rejects is skipped, in one statement and
    without a savepoint."""
    return dialect_insert(session)(table).on_conflict_do_nothing()


# INSERT … ON CONFLICT DO NOTHING RETURNING <primary key> per (dialect, table), built once: the columns written
# are the keys of each execution's values.
_INSERTS_UNLESS_DUPLICATE: dict[tuple[str, Table], Executable] = {}


async def insert_unless_duplicate(session: AsyncSession, row: SQLModel) -> bool:
    """Insert ``row``; False (and nothing written) when a unique constraint rejects it. The constraint decides,
    never a read beforehand, so two concurrent inserts cannot both succeed. On success ``row`` is attached to
    the session as a persistent object, so later changes to it are flushed as an UPDATE."""
    table = row.__table__
    values = {column.key: value for column in table.columns
              if (value := getattr(row, column.key)) is not None or not column.nullable}
    key = (dialect_of(session), table)
    statement = _INSERTS_UNLESS_DUPLICATE.get(key)
    if statement is None:
        statement = _INSERTS_UNLESS_DUPLICATE[key] = (insert_ignoring_duplicates(session, table)
                                                     .returning(*table.primary_key.columns))
    result = await session.execute(statement, values)
    inserted = result.first()
    if inserted is None:
        return False
    for column, value in zip(table.primary_key.columns, inserted, strict=True):
        setattr(row, column.key, value)
    make_transient_to_detached(row)
    session.add(row)
    return True


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=False, pool_recycle=1800
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control from the driver: we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


class Database:
    """The engine and its session factory, built once per process from the settings."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(
            self.engine.execution_options(**{WRITE: True}), class_=AsyncSession, expire_on_commit=False
        )
        # Work whose statements each stand alone skips BEGIN and COMMIT (two round trips) on PostgreSQL. SQLite
        # keeps its transactions: its BEGIN is ours (see _configure_sqlite) and costs no round trip.
        self._autocommit_sessions = None if is_sqlite(url) else async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), class_=AsyncSession, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, write: bool = True) -> AsyncSession:
        return (self._write_sessions if write else self._sessions)()

    def autocommit_session(self, *, write: bool = False) -> AsyncSession:
        """A session whose statements each commit on their own (no transaction on PostgreSQL; on SQLite an
        ordinary one, committed at the end): for work where every statement stands alone, such as a look-up
        that needs no snapshot across statements or a claim made by one conditional statement. Close it with
        a commit, as any other (a no-op on PostgreSQL)."""
        if self._autocommit_sessions is None:
            return self.session(write=write)
        return self._autocommit_sessions()

    def statements(self, *, write: bool = True) -> AbstractAsyncContextManager[AsyncSession]:
        """:meth:`transaction`'s shape for an :meth:`autocommit_session`: each statement commits as it runs on
        PostgreSQL, so nothing the block did before an error is undone. Only for statements that stand alone."""
        return _committed(self.autocommit_session(write=write))

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back if it raises. The one place that commits
        outside a request (requests commit in :mod:`service.routing`)."""
        return _committed(self.session(write=write))

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]], *, write: bool = True) -> T:
        """Run ``work`` in a transaction, retrying it when the database reports a deadlock or a
        serialization failure (the work is rolled back and run again from the start)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.transaction(write=write) as session:
                    return await work(session)
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or not is_retryable(exc):
                    raise
                await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def _committed(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    async with session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def is_retryable(exc: BaseException) -> bool:
    """Deadlock (40P01), serialization failure (40001) or lock timeout (55P03) on PostgreSQL; a busy database
    on SQLite. Retrying the whole unit of work is safe for all of them: nothing of it was committed."""
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in {"40P01", "40001", "55P03"}:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def backoff(attempt: int) -> float:
    return 0.01 * (2**attempt)
