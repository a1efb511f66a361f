"""Database access: the engine, sessions and the one transaction helper.

SQLite (aiosqlite, WAL, foreign keys on) is the embedded default; PostgreSQL (asyncpg) is production. The
schema belongs to Alembic (``migrations/``); nothing here creates tables.

SQLite serializes writers. A transaction that will write starts with ``BEGIN IMMEDIATE`` so it takes the write
lock up front instead of failing half-way when it upgrades from reading to writing; read-only transactions
start deferred and run beside it (WAL).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from time import monotonic
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import DateTime, Executable, Table, any_, bindparam, cast, event, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn
from sqlmodel import SQLModel

from service.clock import utc

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE = "loyalty_write"  # execution option: this transaction will write (BEGIN IMMEDIATE on SQLite)
MAX_ATTEMPTS = 4
POOL_RECYCLE_SECONDS = 1800  # a pooled PostgreSQL connection is replaced once this old
READER_SECONDS = 300  # a connection kept for reads alone goes back to the pool after this (Database.fetch_alone)


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


def holds_writers_off(session: AsyncSession) -> bool:
    """Whether the session's transaction keeps every other session from writing until it ends, from its first
    statement: SQLite's transaction that will write (``BEGIN IMMEDIATE``, see :data:`WRITE`)."""
    return dialect_of(session) == "sqlite" and bool(session.bind.get_execution_options().get(WRITE))


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
    :func:`fetch` can run it; SQLite's expanding ``IN``.

    On PostgreSQL the array is read through a scalar subquery, ``= ANY(CAST((SELECT $n) AS type[]))``, so that
    the planner never sees its length. Given the array itself, a custom plan counts its elements while the
    generic plan guesses ten, so the generic plan always looked dearer and PostgreSQL planned the statement
    afresh at every execution: the quote's voucher screening spent 0.2 to 1 ms planning for 0.1 ms running.
    Through the subquery both plans guess alike and, after its first five executions, a statement keeps its
    generic plan (the same index look-ups)."""
    if insert is postgresql_insert:
        array = ARRAY(column.type)
        return column == any_(cast(select(bindparam(name, type_=array)).scalar_subquery(), array))
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
    key = await insert_values_unless_duplicate(session, table, {
        column.key: value for column in table.columns
        if (value := getattr(row, column.key)) is not None or not column.nullable})
    if key is None:
        return False
    for column, value in zip(table.primary_key.columns, key, strict=True):
        setattr(row, column.key, value)
    if attach:
        make_transient_to_detached(row)
        session.add(row)
    return True


async def insert_values_unless_duplicate(session: AsyncSession, table: Table,
                                         values: dict[str, Any]) -> Sequence[Any] | None:
    """Insert one row of ``table`` (:func:`insert_unless_duplicate` for a row that is not an ORM object): its
    primary key, or None (nothing written) when a unique constraint rejects it."""
    key = (dialect_of(session), table)
    statement = _INSERTS_UNLESS_DUPLICATE.get(key)
    if statement is None:
        statement = _INSERTS_UNLESS_DUPLICATE[key] = (insert_ignoring_duplicates(session, table)
                                                     .returning(*table.primary_key.columns))
    found = await fetch(session, statement, values)
    return tuple(found[0]) if found else None


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
    joins_reads: bool  # may be announced (``prefetch``): no locking clause, no dollars in its text


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
    sql = compiled.string
    entry = _Compiled(compiled, tuple(compiled.positiontup or ()), dict(compiled._bind_processors),
                      results if any(results) else None, row,
                      not (_dollar_in_text(sql) or " FOR UPDATE" in sql or " FOR SHARE" in sql))
    _COMPILED[(id(statement), keys)] = (statement, entry)  # the statement is kept, so its id is never reused
    return entry


def _bound(statement: Executable, params: dict[str, Any], dialect) -> tuple[_Compiled, list[Any]]:
    """The statement compiled for PostgreSQL and its positional arguments, converted by the column types."""
    entry = _compiled_for_postgresql(statement, tuple(params), dialect)
    values = entry.compiled.construct_params(params)
    binds = entry.binds
    return entry, [binds[name](values[name]) if name in binds else values[name] for name in entry.names]


def _tell_listeners(connection: Connection, cursor, sql: str, args: list[Any]) -> None:
    """Statement listeners see a statement sent here as any other (the tests count them)."""
    if connection._has_events or connection.engine._has_events:
        connection.dispatch.before_cursor_execute(connection, cursor, sql, args, None, False)


def _driver_error(error: Exception, sql: str, args: list[Any], connection: Connection) -> DBAPIError:
    """The driver's error as SQLAlchemy would raise it, with the engine's ``hide_parameters`` (see
    :func:`create_engine`): the statement's values stay out of its message."""
    return DBAPIError.instance(sql, args, error, connection.dialect.loaded_dbapi.Error,
                               hide_parameters=connection.engine.hide_parameters, dialect=connection.dialect)


class _Link(NamedTuple):
    """The session's transaction's connection: SQLAlchemy's, and the asyncpg adapter's beneath it."""

    connection: AsyncConnection
    driver: Any  # the adapter's DBAPI connection (its ``cursor()`` runs statements)

    @property
    def dialect(self):
        return self.connection.dialect


_LINK = "loyalty.link"  # session.info: the transaction's _Link, found once per transaction


async def _link(session: AsyncSession) -> _Link:
    """The connection of the session's transaction (beginning it if need be), looked up once per transaction:
    ``session.connection()`` and ``get_raw_connection()`` cost about 30 µs per statement otherwise. Forgotten
    when the transaction ends or rolls back (the listeners below)."""
    link = session.info.get(_LINK)
    if link is None:
        connection = await session.connection()
        link = session.info[_LINK] = _Link(connection, (await connection.get_raw_connection()).dbapi_connection)
    return link


async def _send(link: _Link, sql: str, args: list[Any]):
    """One statement on the transaction's asyncpg connection; returns the adapter's cursor."""
    cursor = link.driver.cursor()
    _tell_listeners(link.connection.sync_connection, cursor, sql, args)
    try:
        await cursor._prepare_and_execute(sql, args)
    except link.dialect.loaded_dbapi.Error as error:
        raise _driver_error(error, sql, args, link.connection.sync_connection) from error
    return cursor


async def _flush_orm(session: AsyncSession) -> None:
    """The session's pending ORM changes, written now: what ``session.execute``'s autoflush would do before a
    statement (the flush sends the deferred writes first)."""
    if session.new or session.deleted or session.identity_map.check_modified():
        await session.flush()


async def _run_on_postgresql(session: AsyncSession, statement: Executable, params: dict[str, Any], *,
                             combine: bool = False):
    """The statement on the transaction's asyncpg connection, after the session's deferred writes (as CTEs of
    this very statement when ``combine`` and they allow it); returns the adapter's cursor."""
    await _flush_orm(session)
    await _send_guard(session)
    link = await _link(session)
    entry, args = _bound(statement, params, link.dialect)
    sql = entry.compiled.string
    waiting: list[_Deferred] | None = session.info.pop(_DEFERRED, None)
    if waiting:
        merged = _merged([*waiting, _Deferred.of(sql, args)]) if combine else None
        if merged is None:
            await _send(link, *_merged_or_single(waiting))
        else:
            sql, args = merged
    return await _send(link, sql, args), entry


async def fetch(session: AsyncSession, statement: Executable, params: dict[str, Any] | None = None) -> list:
    """The rows of a prebuilt statement (a SELECT, or DML with RETURNING), read as SQLAlchemy's rows are: by
    position, unpacked or by column name as an attribute (``row.kind``). The session's pending ORM changes are
    flushed first, as ``session.execute`` would."""
    if dialect_of(session) == "sqlite":
        return list(await session.execute(statement, params or {}))
    if _PREFETCH in session.info:
        rows = await _prefetched(session, statement, params or {})
        if rows is not None:
            return rows
    cursor, entry = await _run_on_postgresql(session, statement, params or {})
    return _rows(entry, cursor._rows)


def _rows(entry: _Compiled, raw: Sequence[Sequence[Any]]) -> list:
    make, results = entry.row._make, entry.results
    if results is None:
        return [make(row) for row in raw]
    return [make(value if convert is None else convert(value) for convert, value in zip(results, row, strict=True))
            for row in raw]


async def execute(session: AsyncSession, statement: Executable, params: dict[str, Any] | None = None, *,
                  combine: bool = False) -> int:
    """Run a prebuilt statement that returns no rows; the number of rows it changed. With ``combine``, the
    session's deferred writes (:func:`defer`) go out as CTEs of this statement, in its one round trip: only for
    a statement that touches no row they write (it does not see their changes)."""
    if dialect_of(session) == "sqlite":
        return (await session.execute(statement, params or {})).rowcount
    cursor, _ = await _run_on_postgresql(session, statement, params or {}, combine=combine)
    return cursor._rowcount


# -- reads announced ahead: several SELECTs in one round trip -------------------------------------------------------
#
# A request that knows early which reads it will make, and for which the moment of each does not matter,
# announces them with ``prefetch``: the quote (it locks nothing and writes nothing), and the commit for reads of
# rows that only change under the member's lock it already holds (its running figures, the lots a burn draws).
# The first ``fetch`` of any of them sends them all as one statement,
# ``SELECT ARRAY(SELECT s FROM (<read 1>) AS s), ARRAY(…)``: PostgreSQL
# returns each read's rows as an array of records, which asyncpg decodes with the columns' own types, and the
# rows keep their subquery's order. Each later ``fetch`` of an announced read (same statement, same values)
# takes its rows from there. A read announced but never fetched costs its share of that one statement.

_PREFETCH = "loyalty.prefetch"  # session.info: {key: (statement, params)} announced, not yet sent; then {key: rows}
_TOGETHER: dict[tuple[str, ...], str] = {}


def _read_key(statement: Executable, params: dict[str, Any]) -> tuple:
    return id(statement), tuple(sorted((name, tuple(value) if isinstance(value, list) else value)
                                       for name, value in params.items()))


def prefetch(session: AsyncSession, statement: Executable, params: dict[str, Any] | None = None) -> None:
    """Announce a read (a prebuilt SELECT, see :func:`fetch`, without a locking clause) that this session will
    ``fetch`` with the same values, at a moment that does not matter to it: on PostgreSQL the reads announced go
    out together at the first ``fetch`` of one of them (see above). On SQLite nothing happens."""
    if dialect_of(session) == "sqlite":
        return
    if not _compiled_for_postgresql(statement, tuple(params or {}), session.bind.dialect).joins_reads:
        raise TypeError("prefetch takes plain SELECTs without dollars in their text or a locking clause")
    session.info.setdefault(_PREFETCH, {})[_read_key(statement, params or {})] = (statement, params or {})


async def _prefetched(session: AsyncSession, statement: Executable, params: dict[str, Any]) -> list | None:
    """The rows of an announced read (sending every announced read that has not gone out yet, if this one has
    not); None for a read that was not announced, or that is the only one not sent yet (the caller sends it)."""
    announced = session.info[_PREFETCH]
    key = _read_key(statement, params)
    found = announced.pop(key, None)
    if found is None:
        return None
    if isinstance(found, list):
        return found
    await _flush_orm(session)  # (the ORM's way sends a guard on its own before its changes)
    if _DEFERRED in session.info:
        await _send_guard(session)  # before the waiting writes, which go out before the reads
    reads = [(key, found), *((k, v) for k, v in announced.items() if not isinstance(v, list))]
    if len(reads) == 1:
        return None  # alone: the caller sends it as itself, without the arrays
    link = await _link(session)
    bound = [_bound(statement_, params_, link.dialect) for _, (statement_, params_) in reads]
    sqls = tuple(entry.compiled.string for entry, _ in bound)
    sql = _TOGETHER.get(sqls)
    if sql is None:  # each read was checked when it was announced (prefetch)
        if len(_TOGETHER) > 1000:
            _TOGETHER.clear()
        offsets = itertools.accumulate((len(args) for _, args in bound), initial=0)
        sql = _TOGETHER[sqls] = "SELECT " + ", ".join(
            f"ARRAY(SELECT s FROM ({_shifted(text_, offset)}) AS s) AS r{n}"
            for n, (text_, offset) in enumerate(zip(sqls, offsets, strict=False)))  # one offset more than reads
    waiting: list[_Deferred] | None = session.info.pop(_DEFERRED, None)
    if waiting:
        await _send(link, *_merged_or_single(waiting))
    cursor = await _send(link, sql, [arg for _, args in bound for arg in args])
    [row] = cursor._rows
    for (read_key, _), (entry, _), raw in zip(reads, bound, row, strict=True):
        announced[read_key] = _rows(entry, raw)
    guard_ = session.info.get(_GUARD)
    if guard_ is not None and guard_[0] in announced:
        del session.info[_GUARD]
        guard_[1](announced.pop(guard_[0]))
    return announced.pop(key)


# -- a guard: the read that goes out first ------------------------------------------------------------------------
#
# Some work must stop before it starts if a read says so (an idempotency key that another request holds or has
# answered). ``guard`` announces such a read: nothing the session sends goes out before it, and its rows go to a
# check as soon as they arrive. When the session's first statement is a fetch of an announced read, the guard
# joins that statement (no round trip of its own); before anything else it goes out alone. Either way the check
# runs before the program sees any other row.

_GUARD = "loyalty.guard"  # session.info: (the guard's read key, its check) until the guard has gone out


def guard(session: AsyncSession, statement: Executable, params: dict[str, Any],
          check: Callable[[list], None]) -> None:
    """Announce a read (a plain SELECT, as :func:`prefetch` takes) that goes out before anything else this session
    sends, in the same transaction, and hand its rows to ``check``, which raises to stop the work (see above).
    PostgreSQL only: on SQLite the caller keeps its own way."""
    if dialect_of(session) == "sqlite":
        raise TypeError("guard is for PostgreSQL")
    prefetch(session, statement, params)
    session.info[_GUARD] = (_read_key(statement, params), check)


def _pending_guard(session: Session | AsyncSession) -> tuple[Executable, dict[str, Any], Callable[[list], None]] | None:
    found = session.info.pop(_GUARD, None)
    if found is None:
        return None
    key, check = found
    statement, params = session.info[_PREFETCH].pop(key)
    return statement, params, check


async def _send_guard(session: AsyncSession) -> None:
    """The guard, if it has not gone out yet, on its own, and its check."""
    pending = _pending_guard(session)
    if pending is None:
        return
    statement, params, check = pending
    link = await _link(session)
    entry, args = _bound(statement, params, link.dialect)
    check(_rows(entry, (await _send(link, entry.compiled.string, args))._rows))


def _send_guard_now(session: Session) -> None:
    """:func:`_send_guard` from inside SQLAlchemy's own (synchronous) session machinery."""
    pending = _pending_guard(session)
    if pending is None:
        return
    statement, params, check = pending
    entry, args = _bound(statement, params, session.connection().dialect)
    check(_rows(entry, _send_now(session, entry.compiled.string, args)._rows))


def _shifted(sql: str, offset: int) -> str:
    """The statement's ``$n`` placeholders renumbered from ``offset`` (for statements joined into one)."""
    return _PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", sql) if offset else sql


# -- deferred writes: several statements in one round trip ------------------------------------------------------
#
# Each statement costs a round trip: about 0.2 ms of the worker's CPU and as much again of PostgreSQL's, whatever
# its SQL. A write whose result nobody reads (a ledger posting, a running figure, an outbox event) need not go out
# at once: ``defer`` keeps it in the session, and the session's next statement sends every deferred write with it,
# as data-modifying CTEs of one statement (PostgreSQL runs them all, in one snapshot, and checks foreign keys when
# the statement ends). The order of the program's writes is kept: ``defer`` first flushes pending ORM changes,
# and anything that reads or writes through the session (``fetch``, ``execute``, ``session.execute``, a flush,
# the commit) sends the deferred writes before it. A rollback drops them with the rest.
#
# Rules for a deferred write (PostgreSQL's, for the statements of one WITH): it touches rows no other write in
# its batch touches, and nothing expects its error on the spot (a constraint it breaks fails the batch, later).
# And it is a single-row insert, upsert or update by key: a batch of many tables gets a generic plan, made once
# per connection, and a join whose plan depends on the tables' sizes would keep the plan it got while they were
# small (the ledger posting's UPDATE … FROM unnest(…) did, and commits slowed as the tables grew).
# A batch never holds the same statement twice, nor two CTEs of the same name: such a write starts a new batch.
# New rows of one table are the exception (``defer_row``): they share one multi-row INSERT, in the order given.

_DEFERRED = "loyalty.deferred"  # session.info: the writes waiting for the session's next statement
_PLACEHOLDER = re.compile(r"\$(\d+)")
_CTE_HEAD = re.compile(r'\s*("[^"]+"|[A-Za-z_][A-Za-z0-9_]*)\s+AS\s*\(', re.IGNORECASE)
_SPLIT: dict[str, tuple[tuple[tuple[str, str], ...], str] | None] = {}


class _Deferred(NamedTuple):
    sql: str
    args: list[Any]
    parts: tuple[tuple[str, str], ...] | None  # its CTEs (name, body); None if it cannot join a batch
    main: str
    rows: tuple[Table, tuple[dict[str, Any], ...]] | None = None  # defer_row's: the table and its rows

    @classmethod
    def of(cls, sql: str, args: list[Any]) -> _Deferred:
        split = _SPLIT.get(sql)
        if sql not in _SPLIT:
            split = _SPLIT[sql] = _split_with(sql)
        return cls(sql, args, *(split if split is not None else (None, sql)))


def _dollar_in_text(sql: str) -> bool:
    """Dollar quoting, or a ``$`` inside a string literal: placeholders are renumbered as text, so not here."""
    return "$$" in sql or any("$" in literal for literal in sql.split("'")[1::2])


def _split_with(sql: str) -> tuple[tuple[tuple[str, str], ...], str] | None:
    """``WITH a AS (…), b AS (…) <main>`` taken apart into its CTEs and its main statement (a statement without
    WITH has none); None for what this does not take apart: WITH RECURSIVE, MATERIALIZED, dollar quoting, a
    ``$`` inside a string literal (placeholders are renumbered as text)."""
    if _dollar_in_text(sql):
        return None
    text_ = sql.strip()
    if not re.match(r"WITH\s", text_, re.IGNORECASE):
        return (), text_
    parts: list[tuple[str, str]] = []
    position = 4
    while True:
        head = _CTE_HEAD.match(text_, position)
        if head is None:
            return None
        depth, i, quoted = 1, head.end(), False
        while depth:
            if i == len(text_):
                return None
            char = text_[i]
            if char == "'":
                quoted = not quoted
            elif not quoted:
                depth += {"(": 1, ")": -1}.get(char, 0)
            i += 1
        parts.append((head.group(1), text_[head.end():i - 1]))
        rest = text_[i:].lstrip()
        if not rest.startswith(","):
            return tuple(parts), rest
        position = len(text_) - len(rest) + 1


def _merged(batch: list[_Deferred]) -> tuple[str, list[Any]] | None:
    """The batch as one statement: every write's CTEs, each write but the last as a CTE of its own, the last's
    main statement as the statement's; None if a write cannot join or two CTEs share a name. The text depends
    only on the writes' texts: it is built once per sequence of them."""
    key = tuple(item.sql for item in batch)
    if key not in _MERGED:
        _MERGED[key] = _merged_text(batch)
    sql = _MERGED[key]
    if sql is None:
        return None
    return sql, [arg for item in batch for arg in item.args]


_MERGED: dict[tuple[str, ...], str | None] = {}


def _merged_text(batch: list[_Deferred]) -> str | None:
    if any(item.parts is None for item in batch):
        return None
    ctes: list[tuple[str, str]] = []
    offset = 0
    main = ""
    for n, item in enumerate(batch):
        ctes += [(name, _shifted(body, offset)) for name, body in item.parts or ()]
        if n < len(batch) - 1:
            ctes.append((f"deferred_{n}", _shifted(item.main, offset)))
        else:
            main = _shifted(item.main, offset)
        offset += len(item.args)
    if len({name for name, _ in ctes}) < len(ctes):
        return None
    if len(_MERGED) > 1000:  # a bound, should the sequences ever vary without end
        _MERGED.clear()
    if not ctes:
        return main
    return "WITH " + ", ".join(f"{name} AS ({body})" for name, body in ctes) + " " + main


def _merged_or_single(batch: list[_Deferred]) -> tuple[str, list[Any]]:
    """``defer`` only lets a batch grow while it merges."""
    if len(batch) == 1:
        return batch[0].sql, batch[0].args
    merged = _merged(batch)
    if merged is None:
        raise AssertionError("a deferred batch that does not merge")
    return merged


async def defer(session: AsyncSession, statement: Executable, params: dict[str, Any] | None = None) -> None:
    """Run a prebuilt write (see :func:`fetch`) whose result nobody reads: on PostgreSQL it goes out with the
    session's next statement, in the same round trip (see the rules above); on SQLite at once."""
    if dialect_of(session) == "sqlite":
        await session.execute(statement, params or {})
        return
    await _flush_orm(session)  # what the program wrote before this goes out before it
    link = await _link(session)
    entry, args = _bound(statement, params or {}, link.dialect)
    await _wait(session, link, _Deferred.of(entry.compiled.string, args))


async def _wait(session: AsyncSession, link: _Link, item: _Deferred, *, alone: bool = False) -> None:
    """``item`` joins the waiting batch, or the batch goes out first when it cannot take it (``alone``: the
    caller knows it cannot)."""
    waiting: list[_Deferred] = session.info.setdefault(_DEFERRED, [])
    if waiting and (alone or any(w.sql == item.sql for w in waiting) or _merged([*waiting, item]) is None):
        await _send_guard(session)
        session.info[_DEFERRED] = []
        await _send(link, *_merged_or_single(waiting))
        waiting = session.info[_DEFERRED]
    if item.parts is None:
        await _send_guard(session)
        await _send(link, item.sql, item.args)
    else:
        waiting.append(item)


ROWS_PER_INSERT = 16
_ROW_INSERTS: dict[tuple[str, tuple[str, ...], int], Executable] = {}


def _rows_insert(table: Table, keys: tuple[str, ...], count: int) -> Executable:
    """``INSERT INTO table (keys) VALUES (…), …`` of ``count`` rows, the i-th row's values named ``<key>_<i>``;
    built once per table, columns and count."""
    statement = _ROW_INSERTS.get((table.name, keys, count))
    if statement is None:
        statement = _ROW_INSERTS[table.name, keys, count] = insert(table).values(
            [{key: bindparam(f"{key}_{i}", type_=table.c[key].type) for key in keys} for i in range(count)])
    return statement


def _rows_params(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {f"{key}_{i}": value for i, row in enumerate(rows) for key, value in row.items()}


async def defer_row(session: AsyncSession, table: Table, values: dict[str, Any]) -> None:
    """:func:`defer` for the INSERT of one new row of ``table`` (``values`` by column key). Rows of one table
    waiting in the same batch go out as one multi-row INSERT, in the order they were given (a sequence numbers
    them in that order), so a batch takes several new rows of a table (a sale's outbox events, its rewards)
    where it would never take one statement twice. A row of a table whose rows cannot take it (other columns, or
    already ``ROWS_PER_INSERT``) sends the batch first: two INSERTs of one table in one statement would run in
    no set order. On SQLite the row is inserted at once."""
    keys = tuple(values)
    if dialect_of(session) == "sqlite":
        await session.execute(_rows_insert(table, keys, 1), _rows_params([values]))
        return
    await _flush_orm(session)
    link = await _link(session)
    waiting: list[_Deferred] = session.info.get(_DEFERRED) or []
    for i, item in enumerate(waiting):
        if item.rows is None or item.rows[0] is not table:
            continue
        rows = (*item.rows[1], values)
        if len(rows) <= ROWS_PER_INSERT and tuple(rows[0]) == keys:  # the waiting rows share their columns
            joined = _row_item(link, table, rows)
            if _merged([*waiting[:i], joined, *waiting[i + 1:]]) is not None:
                waiting[i] = joined
                return
        await _wait(session, link, _row_item(link, table, (values,)), alone=True)
        return
    await _wait(session, link, _row_item(link, table, (values,)))


def _row_item(link: _Link, table: Table, rows: tuple[dict[str, Any], ...]) -> _Deferred:
    entry, args = _bound(_rows_insert(table, tuple(rows[0]), len(rows)), _rows_params(rows), link.dialect)
    return _Deferred.of(entry.compiled.string, args)._replace(rows=(table, rows))


def _send_deferred(session: Session) -> None:
    """The deferred writes, now, from inside SQLAlchemy's own (synchronous) session machinery; a guard first."""
    _send_guard_now(session)
    waiting = session.info.pop(_DEFERRED, None)
    if not waiting:
        return
    _send_now(session, *_merged_or_single(waiting))


def _send_now(session: Session, sql: str, args: list[Any]):
    """One statement on the session's connection, from inside SQLAlchemy's own (synchronous) session machinery;
    returns the adapter's cursor."""
    connection = session.connection()
    cursor = connection.connection.dbapi_connection.cursor()
    _tell_listeners(connection, cursor, sql, args)
    try:
        cursor.execute(sql, args)
    except connection.dialect.loaded_dbapi.Error as error:
        raise _driver_error(error, sql, args, connection) from error
    return cursor


class LoyaltySession(Session):
    """The service's sessions: deferred writes go out before anything else the session sends (a savepoint
    included, so that rolling it back undoes only what was written inside it), and a rollback forgets them."""

    def begin_nested(self):
        _send_deferred(self)
        return super().begin_nested()


@event.listens_for(LoyaltySession, "do_orm_execute")
def _before_orm_execute(state) -> None:
    _send_deferred(state.session)


@event.listens_for(LoyaltySession, "before_flush")
def _before_flush(session: Session, _context, _instances) -> None:
    _send_deferred(session)


@event.listens_for(LoyaltySession, "before_commit")
def _before_commit(session: Session) -> None:
    _send_deferred(session)


@event.listens_for(LoyaltySession, "after_soft_rollback")
def _after_rollback(session: Session, _previous) -> None:
    session.info.pop(_DEFERRED, None)
    session.info.pop(_PREFETCH, None)
    session.info.pop(_GUARD, None)
    session.info.pop(_LINK, None)


@event.listens_for(LoyaltySession, "after_transaction_end")
def _after_transaction_end(session: Session, transaction) -> None:
    if transaction.parent is None:  # the session's transaction ended (a commit has sent them already)
        session.info.pop(_DEFERRED, None)
        session.info.pop(_PREFETCH, None)  # reads announced or read in it belong to it, as does a guard
        session.info.pop(_GUARD, None)
        session.info.pop(_LINK, None)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    """The engine for ``url``. ``hide_parameters``: SQLAlchemy's errors otherwise quote a failed statement's
    values ("[parameters: ...]"), members' names, phones and emails among them, into every traceback that is
    logged, where no erasure reaches them; the statement itself and the driver's message stay."""
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=False, pool_recycle=POOL_RECYCLE_SECONDS,
        hide_parameters=True,
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


def _sessionmaker(bind: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind, class_=AsyncSession, sync_session_class=LoyaltySession, expire_on_commit=False)


class Database:
    """The engine and its session factory, built once per process from the settings."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self._sessions = _sessionmaker(self.engine)
        self._write_sessions = _sessionmaker(self.engine.execution_options(**{WRITE: True}))
        # Work whose statements each stand alone skips BEGIN and COMMIT (two round trips) on PostgreSQL. SQLite
        # keeps its transactions: its BEGIN is ours (see _configure_sqlite) and costs no round trip.
        self._autocommit_sessions = None if is_sqlite(url) else _sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"))
        # Connections kept out of the pool for reads alone (fetch_alone), newest last, with when each was taken.
        self._readers: list[tuple[PoolProxiedConnection, float]] = []
        self._readers_max = max(1, pool_size // 2)

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

    async def fetch_alone(self, statement: Executable, params: dict[str, Any]) -> list:
        """The rows of one prebuilt read that stands alone (as :func:`fetch` reads them), outside any session. On
        PostgreSQL straight on an asyncpg connection kept for such reads: up to half the pool's size of them
        stay checked out of the pool between reads, which spares a look-up the pool's checkout and check-in
        (about 0.15 ms of its 0.45 ms of CPU; the session's set-up was spared before). Each goes back to the pool
        after ``READER_SECONDS``, which recycles it as any other. A connection whose statement failed or was cut
        short is closed, and so are the other kept ones: if the server was lost they were too, and neither a read
        nor the pool should meet them again. On SQLite, :func:`fetch` in a session of its own."""
        if self._autocommit_sessions is None:
            async with self.statements(write=False) as session:
                return await fetch(session, statement, params)
        entry, args = _bound(statement, params, self.engine.dialect)
        sql = entry.compiled.string
        pooled, taken = self._readers.pop() if self._readers else (await self.engine.raw_connection(), monotonic())
        try:
            engine = self.engine.sync_engine
            if engine._has_events:  # statement listeners see it as any other (no SQLAlchemy connection here)
                engine.dispatch.before_cursor_execute(None, None, sql, args, None, False)
            raw = await pooled.driver_connection.fetch(sql, *args)
        except BaseException:
            readers, self._readers = self._readers, []
            for each in (pooled, *(kept for kept, _ in readers)):
                await greenlet_spawn(each.invalidate)
            raise
        if len(self._readers) < self._readers_max and monotonic() - taken < READER_SECONDS:
            self._readers.append((pooled, taken))
        else:
            await greenlet_spawn(pooled.close)
        return _rows(entry, raw)

    async def dispose(self) -> None:
        readers, self._readers = self._readers, []
        for pooled, _ in readers:
            await greenlet_spawn(pooled.close)
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
