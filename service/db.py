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
from collections import namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import DateTime, Executable, Table, any_, bindparam, event
from sqlalchemy.dialects.postgresql import ARRAY
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


def one_of(insert, column, name: str):
    """``column IN (the list given as parameter name)`` in a prebuilt statement (``build`` receives ``insert``):
    ``= ANY($n)`` with one array parameter on PostgreSQL, so the SQL does not change with the list's length and
    :func:`fetch` can run it; SQLite's expanding ``IN``."""
    if insert is postgresql_insert:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def insert_ignoring_duplicates(session: AsyncSession, table: Table):
    """``INSERT … ON CONFLICT DO NOTHING``: a row a unique constraint rejects is skipped, in one statement and
    without a savepoint."""
    return dialect_insert(session)(table).on_conflict_do_nothing()


# INSERT … ON CONFLICT DO NOTHING RETURNING <primary key> per (dialect, table), built once: the columns written
# are the keys of each execution's values.
_INSERTS_UNLESS_DUPLICATE: dict[tuple[str, Table], Executable] = {}


async def insert_unless_duplicate(session: AsyncSession, row: SQLModel, *, attach: bool = True) -> bool:
    """Insert ``row``; False (and nothing written) when a unique constraint rejects it. The constraint decides,
    never a read beforehand, so two concurrent inserts cannot both succeed. On success ``row`` is attached to
    the session as a persistent object, so later changes to it are flushed as an UPDATE (unless ``attach`` is
    False: the caller then writes its later changes itself)."""
    table = row.__table__
    values = {column.key: value for column in table.columns
              if (value := getattr(row, column.key)) is not None or not column.nullable}
    key = (dialect_of(session), table)
    statement = _INSERTS_UNLESS_DUPLICATE.get(key)
    if statement is None:
        statement = _INSERTS_UNLESS_DUPLICATE[key] = (insert_ignoring_duplicates(session, table)
                                                     .returning(*table.primary_key.columns))
    found = await fetch(session, statement, values)
    if not found:
        return False
    for column, value in zip(table.primary_key.columns, found[0], strict=True):
        setattr(row, column.key, value)
    if attach:
        make_transient_to_detached(row)
        session.add(row)
    return True


# -- the hot paths' statements, without the ORM on PostgreSQL ----------------------------------------------------
#
# SQLAlchemy's execution path (compiled-cache look-up, execution context, result and ORM layers, the greenlet
# hop) costs about 0.2 ms of CPU per statement above the driver's own 0.1 ms: on the till's paths it was over
# 40 % of a quote's CPU. ``fetch`` and ``execute`` run a statement built once at import (values as
# ``bindparam``) straight on the asyncpg connection of the session's transaction, with SQLAlchemy's own
# parameter and result conversions; on SQLite they are ``session.execute``.


class _Compiled(NamedTuple):
    compiled: Any  # the dialect's SQLCompiler
    names: tuple[str, ...]  # the parameters in positional order
    binds: dict[str, Callable[[Any], Any]]  # bind processors by parameter name
    results: tuple[Callable[[Any], Any] | None, ...] | None  # None when every column passes through as read
    row: type[tuple]  # a named tuple of the result columns, as SQLAlchemy's ``Row`` reads


_COMPILED: dict[tuple[int, tuple[str, ...]], tuple[Executable, _Compiled]] = {}


def _compiled_for_postgresql(statement: Executable, keys: tuple[str, ...], dialect) -> _Compiled:
    """The statement compiled for these parameter names (an INSERT or UPDATE without ``.values()`` writes the
    columns its parameters name, as ``session.execute`` does), once per statement and names."""
    found = _COMPILED.get((id(statement), keys))
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if "POSTCOMPILE" in compiled.string:
        raise TypeError("fetch/execute take statements whose values are all plain bindparams (no IN lists)")
    results = tuple(column.type._cached_result_processor(dialect, None) for column in compiled._result_columns)
    row = namedtuple("Row", [column.keyname for column in compiled._result_columns], rename=True)
    entry = _Compiled(compiled, tuple(compiled.positiontup or ()), dict(compiled._bind_processors),
                      results if any(results) else None, row)
    _COMPILED[(id(statement), keys)] = (statement, entry)  # the statement is kept, so its id is never reused
    return entry


async def _run_on_postgresql(session: AsyncSession, statement: Executable, params: dict[str, Any]):
    """The statement on the transaction's asyncpg connection; returns the adapter's cursor."""
    if session.new or session.deleted or session.identity_map.check_modified():
        await session.flush()  # what session.execute's autoflush would do
    connection = await session.connection()
    dialect = connection.dialect
    entry = _compiled_for_postgresql(statement, tuple(params), dialect)
    values = entry.compiled.construct_params(params)
    binds = entry.binds
    args = [binds[name](values[name]) if name in binds else values[name] for name in entry.names]
    cursor = (await connection.get_raw_connection()).dbapi_connection.cursor()
    sync = connection.sync_connection
    if sync._has_events or sync.engine._has_events:  # listeners see it as any statement (tests count them)
        sync.dispatch.before_cursor_execute(sync, cursor, entry.compiled.string, args, None, False)
    try:
        await cursor._prepare_and_execute(entry.compiled.string, args)  # BEGINs the transaction if not yet begun
    except dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(entry.compiled.string, args, error, dialect.loaded_dbapi.Error,
                                  dialect=dialect) from error
    return cursor, entry


async def fetch(session: AsyncSession, statement: Executable, params: dict[str, Any] | None = None) -> list:
    """The rows of a prebuilt statement (a SELECT, or DML with RETURNING), read as SQLAlchemy's rows are: by
    position, unpacked or by column name as an attribute (``row.kind``). The session's pending ORM changes are
    flushed first, as ``session.execute`` would."""
    if dialect_of(session) == "sqlite":
        return list(await session.execute(statement, params or {}))
    cursor, entry = await _run_on_postgresql(session, statement, params or {})
    make, results = entry.row._make, entry.results
    if results is None:
        return [make(row) for row in cursor._rows]
    return [make(value if convert is None else convert(value) for convert, value in zip(results, row, strict=True))
            for row in cursor._rows]


async def execute(session: AsyncSession, statement: Executable, params: dict[str, Any] | None = None) -> int:
    """Run a prebuilt statement that returns no rows; the number of rows it changed."""
    if dialect_of(session) == "sqlite":
        return (await session.execute(statement, params or {})).rowcount
    cursor, _ = await _run_on_postgresql(session, statement, params or {})
    return cursor._rowcount


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
