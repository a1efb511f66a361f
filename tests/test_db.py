"""``service.db.fetch`` and ``execute``: the hot paths' prebuilt statements, which skip SQLAlchemy's execution
layers on PostgreSQL, behave as ``session.execute`` does on both dialects: values and rows converted by the
column types, the session's transaction and pending ORM changes respected, driver errors raised as
SQLAlchemy's, statement listeners told.

``service.db.defer``: writes that wait for the session's next statement and go out with it in one round trip on
PostgreSQL, in the program's order, and never outlive a rollback.

``service.db.prefetch``: reads announced ahead go out together in one statement at the first ``fetch`` of one of
them, each later ``fetch`` getting the same rows it would have read alone.

``service.db.guard``: a read announced to go out before anything else the session sends, checked on arrival."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Float, Integer, bindparam, event, func, insert, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError

from service import db
from service.auth.models import ApiKey
from service.events.models import Event
from service.program.models import Store
from tests.conftest import IS_POSTGRES

STORES = Store.__table__
_ADD = insert(STORES)  # columns from the parameters' names
_RENAME = update(STORES).where(STORES.c.id == bindparam("p_id")).values(name=bindparam("p_name"))
_BY_ID = select(STORES.c.id, STORES.c.name, STORES.c.created_at).where(STORES.c.id == bindparam("p_id"))
_COUNT = select(func.count()).select_from(STORES)
_RENAME_RETURNING = (update(STORES).where(STORES.c.id == bindparam("p_id")).values(name=bindparam("p_name"))
                     .returning(STORES.c.id, STORES.c.name))
_NAMED = db.prebuilt(lambda insert_: select(STORES.c.id).where(db.one_of(insert_, STORES.c.id, "p_ids"))
                     .order_by(STORES.c.id))
AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
async def database(app, settings):
    """The test database (``app`` has emptied it), through the service's own engine set-up."""
    database = db.Database(settings.database_url, pool_size=2)
    yield database
    await database.dispose()


def store(id: str, name: str = "Main street") -> dict:
    return {"id": id, "name": name, "timezone": "Europe/London", "created_at": AT}


async def test_rows_read_by_position_unpacking_and_name_with_the_column_types_applied(database) -> None:
    async with database.transaction() as session:
        assert await db.execute(session, _ADD, store("s-1")) == 1
    async with database.transaction() as session:
        rows = await db.fetch(session, _BY_ID, {"p_id": "s-1"})
        missing = await db.fetch(session, _BY_ID, {"p_id": "s-2"})
    assert missing == []
    [row] = rows
    id_, name, created_at = row
    assert (id_, name, row.name, row[0]) == ("s-1", "Main street", "Main street", "s-1")
    assert created_at == AT and created_at.tzinfo is not None  # UTCDateTime's result processor ran


async def test_execute_counts_changed_rows_and_fetch_reads_returning(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
        await db.execute(session, _ADD, store("s-2"))
        assert await db.execute(session, _RENAME, {"p_id": "nope", "p_name": "x"}) == 0
        assert await db.fetch(session, _RENAME_RETURNING, {"p_id": "s-2", "p_name": "High street"}) == [
            ("s-2", "High street")
        ]
    async with database.transaction() as session:
        assert [tuple(r) for r in await db.fetch(session, _NAMED(session), {"p_ids": ["s-2", "s-1", "s-9"]})] == [
            ("s-1",), ("s-2",)
        ]
        assert await db.fetch(session, _NAMED(session), {"p_ids": []}) == []


async def test_a_rolled_back_transaction_leaves_nothing(database) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await db.execute(session, _ADD, store("s-1"))
            assert (await db.fetch(session, _COUNT))[0][0] == 1  # the same transaction sees its own row
            raise RuntimeError("the sale failed")
    async with database.transaction() as session:
        assert (await db.fetch(session, _COUNT))[0][0] == 0


async def test_a_session_that_goes_on_after_its_transaction_ends_runs_in_the_next_one(database) -> None:
    """The connection of a session's transaction is looked up once per transaction: after a commit or a
    rollback, the next statement runs in the session's next transaction, not on the connection it gave back."""
    async with database.session() as session:
        await db.execute(session, _ADD, store("s-1"))
        await session.commit()
        await db.execute(session, _ADD, store("s-2"))
        await session.rollback()
        await db.execute(session, _ADD, store("s-3"))
        assert (await db.fetch(session, _COUNT))[0][0] == 2
        await session.rollback()
        rows = await db.fetch(session, _NAMED(session), {"p_ids": ["s-1", "s-2", "s-3"]})
        assert [row.id for row in rows] == ["s-1"]
        await session.commit()


async def test_a_constraint_violation_raises_sqlalchemys_integrity_error(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            await db.execute(session, _ADD, store("s-1", name="Copy"))
    async with database.transaction() as session:
        assert [tuple(r)[:2] for r in await db.fetch(session, _BY_ID, {"p_id": "s-1"})] == [("s-1", "Main street")]


async def test_pending_orm_changes_are_flushed_before_the_statement(database) -> None:
    async with database.transaction() as session:
        session.add(Store(**store("s-1")))
        assert (await db.fetch(session, _COUNT))[0][0] == 1
        entity = await session.get(Store, "s-1")
        entity.created_at = AT + timedelta(days=1)  # a change to a loaded entity is flushed too
        [row] = await db.fetch(session, _BY_ID, {"p_id": "s-1"})
        assert row.created_at == AT + timedelta(days=1)


async def test_statement_listeners_see_each_statement(database) -> None:
    seen: list[str] = []

    def listen(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", listen)
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
        await db.fetch(session, _BY_ID, {"p_id": "s-1"})
    assert [s.split()[0] for s in seen if s.split()[0] in {"INSERT", "SELECT"}] == ["INSERT", "SELECT"]


# -- reads outside a session ------------------------------------------------------------------------------------

async def test_a_read_alone_reads_as_fetch_reads(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
        [expected] = await db.fetch(session, _BY_ID, {"p_id": "s-1"})
    seen = statements_of(database)
    [row] = await database.fetch_alone(_BY_ID, {"p_id": "s-1"})
    assert (row, row.created_at, row.created_at.tzinfo) == (expected, AT, UTC)
    assert await database.fetch_alone(_BY_ID, {"p_id": "s-2"}) == []
    assert [s.split()[0] for s in seen] == ["SELECT", "SELECT"]
    await database.dispose()
    assert database.engine.pool.checkedout() == 0


async def _backend(database: db.Database) -> int:
    [(pid,)] = await database.fetch_alone(select(func.pg_backend_pid()).where(bindparam("p_any")), {"p_any": True})
    return pid


async def _backend_after(database: db.Database, seconds: float) -> int:
    """The backend's process id, after a sleep that holds the connection (to run several reads at once)."""
    statement = select(func.pg_backend_pid(), func.pg_sleep(bindparam("p_seconds", type_=Float)))
    [(pid, _)] = await database.fetch_alone(statement, {"p_seconds": seconds})
    return pid


async def _sleep_alone(database: db.Database, seconds: float) -> list:
    return await database.fetch_alone(select(func.pg_sleep(bindparam("p_seconds", type_=Float))),
                                      {"p_seconds": seconds})


@pytest.mark.postgres_only
async def test_reads_alone_keep_up_to_half_the_pools_connections_out_of_it_for_the_next_ones(database) -> None:
    first = await _backend(database)
    assert await _backend(database) == first  # kept between reads, not checked in and out
    assert database.engine.pool.checkedout() == 1
    await asyncio.gather(*(_sleep_alone(database, 0.2) for _ in range(3)))  # three connections at once
    assert database.engine.pool.checkedout() == 1  # the pool's size is 2: one is kept, the others went back
    await database.dispose()
    assert database.engine.pool.checkedout() == 0


@pytest.mark.postgres_only
async def test_a_connection_kept_for_reads_alone_goes_back_to_the_pool_after_a_while(database, monkeypatch) -> None:
    await _backend(database)
    assert database.engine.pool.checkedout() == 1
    monkeypatch.setattr(db, "READER_SECONDS", 0)
    await _backend(database)
    assert database.engine.pool.checkedout() == 0


@pytest.mark.postgres_only
async def test_a_read_alone_cut_short_or_failed_does_not_pool_its_connection_again(database) -> None:
    first = await _backend(database)  # the pool's one connection so far, kept for the next read alone
    reading = asyncio.create_task(_sleep_alone(database, 30))
    await asyncio.sleep(0.3)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert database.engine.pool.checkedout() == 0
    second = await _backend(database)
    assert second != first  # the connection cut short was closed; the pool connected anew
    with pytest.raises(Exception, match="division by zero"):
        await database.fetch_alone(select(literal_column("1") / bindparam("p_zero", type_=Integer)), {"p_zero": 0})
    assert database.engine.pool.checkedout() == 0
    assert await _backend(database) not in (first, second)


@pytest.mark.postgres_only
async def test_a_failed_read_alone_closes_the_other_kept_connections_too(settings) -> None:
    database = db.Database(settings.database_url, pool_size=4)  # two kept
    try:
        kept = set(await asyncio.gather(_backend_after(database, 0.2), _backend_after(database, 0.2)))
        assert len(kept) == 2 and database.engine.pool.checkedout() == 2
        with pytest.raises(Exception, match="division by zero"):
            await database.fetch_alone(select(literal_column("1") / bindparam("p_zero", type_=Integer)),
                                       {"p_zero": 0})
        assert database.engine.pool.checkedout() == 0  # a lost server would have lost them too
        assert not kept & set(await asyncio.gather(_backend_after(database, 0.2), _backend_after(database, 0.2)))
    finally:
        await database.dispose()


# -- deferred writes ------------------------------------------------------------------------------------------

_KEYS = ApiKey.__table__
_ADD_KEY = insert(_KEYS)


def key(id: str, store_id: str) -> dict:
    return {"id": id, "key_hash": id * 2, "prefix": id, "role": "pos", "store_id": store_id, "created_at": AT}


def statements_of(database) -> list[str]:
    """The INSERT/UPDATE/SELECT/WITH statements sent from now on (BEGIN, COMMIT and the like left out)."""
    seen: list[str] = []

    def listen(conn, cursor, statement, *_) -> None:
        if statement.split()[0] in {"INSERT", "UPDATE", "SELECT", "WITH", "DELETE"}:
            seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", listen)
    return seen


async def names(database) -> list[tuple[str, str]]:
    async with database.transaction() as session:
        return [(r.id, r.name) for r in await db.fetch(session, select(STORES.c.id, STORES.c.name)
                                                         .order_by(STORES.c.id))]


async def test_deferred_writes_go_out_with_a_combined_statement_in_one_round_trip(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-0"))
    seen = statements_of(database)
    async with database.transaction() as session:
        await db.defer(session, _ADD, store("s-1"))
        await db.defer(session, _ADD_KEY, key("k-1", "s-1"))  # its store is written in the same statement
        changed = await db.execute(session, _RENAME, {"p_id": "s-0", "p_name": "Renamed"}, combine=True)
    assert changed == 1  # the main statement's count, not the deferred writes'
    assert len(seen) == (1 if IS_POSTGRES else 3)
    assert await names(database) == [("s-0", "Renamed"), ("s-1", "Main street")]
    async with database.transaction() as session:
        assert (await session.get(ApiKey, "k-1")).store_id == "s-1"


async def test_a_read_sees_the_deferred_writes(database) -> None:
    async with database.transaction() as session:
        await db.defer(session, _ADD, store("s-1"))
        assert (await db.fetch(session, _COUNT))[0][0] == 1
        await db.defer(session, _RENAME, {"p_id": "s-1", "p_name": "Core"})
        assert (await session.execute(select(STORES.c.name))).scalar_one() == "Core"  # session.execute too
        await db.defer(session, _ADD, store("s-2"))
        assert await session.get(Store, "s-2") is not None  # and the ORM
        await db.defer(session, _RENAME, {"p_id": "s-2", "p_name": "Flushed"})
        session.add(ApiKey(**key("k-1", "s-2")))
        await session.flush()
    assert await names(database) == [("s-1", "Core"), ("s-2", "Flushed")]


async def test_the_commit_sends_what_is_still_deferred(database) -> None:
    seen = statements_of(database)
    async with database.transaction() as session:
        await db.defer(session, _ADD, store("s-1"))
        await db.defer(session, _ADD_KEY, key("k-1", "s-1"))
    assert await names(database) == [("s-1", "Main street")]
    assert len(seen) == (1 if IS_POSTGRES else 2) + 1  # the writes, then names()' read


async def test_a_rollback_forgets_the_deferred_writes(database) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await db.defer(session, _ADD, store("s-1"))
            raise RuntimeError("the sale failed")
    session = database.session()
    await db.defer(session, _ADD, store("s-2"))
    await session.rollback()
    await session.commit()
    await session.close()
    assert await names(database) == []


async def test_the_same_write_twice_goes_out_in_two_batches(database) -> None:
    seen = statements_of(database)
    async with database.transaction() as session:
        for n in range(3):
            await db.defer(session, _ADD, store(f"s-{n}", name=f"Store {n}"))
    assert await names(database) == [("s-0", "Store 0"), ("s-1", "Store 1"), ("s-2", "Store 2")]
    assert len(seen) == 4


EVENTS = Event.__table__


def event_row(n: int, **extra) -> dict:
    return {"event_id": f"evt-{n}", "type": "test.happened", "occurred_at": AT, "member_id": None,
            "data": {"n": n}, **extra}


async def events_in_order(database) -> list[str]:
    async with database.transaction() as session:
        return list((await session.execute(select(EVENTS.c.event_id).order_by(EVENTS.c.seq))).scalars())


async def test_new_rows_of_one_table_share_one_insert_in_the_order_given(database) -> None:
    """``db.defer_row``: a batch takes several new rows of a table as one multi-row INSERT (where it never takes
    one statement twice), and their sequence numbers them in the order they were given, other writes between."""
    seen = statements_of(database)
    async with database.transaction() as session:
        await db.defer_row(session, EVENTS, event_row(1))
        await db.defer(session, _ADD, store("s-1"))
        await db.defer_row(session, EVENTS, event_row(2))
        await db.defer_row(session, EVENTS, event_row(3))
    assert len(seen) == (1 if IS_POSTGRES else 4), seen
    assert await events_in_order(database) == ["evt-1", "evt-2", "evt-3"]
    assert await names(database) == [("s-1", "Main street")]


async def test_rows_an_insert_cannot_take_start_a_batch_of_their_own(database) -> None:
    """Other columns, or more than ``ROWS_PER_INSERT`` rows: the batch goes out first, so two INSERTs of one table
    never share a statement (they would run in no set order)."""
    seen = statements_of(database)
    count = db.ROWS_PER_INSERT + 1
    async with database.transaction() as session:
        for n in range(count):
            await db.defer_row(session, EVENTS, event_row(n))
        await db.defer_row(session, EVENTS, event_row(count, position=None))
    assert len(seen) == (3 if IS_POSTGRES else count + 1), seen
    assert await events_in_order(database) == [f"evt-{n}" for n in range(count + 1)]


async def test_orm_changes_made_before_a_deferred_write_go_out_before_it(database) -> None:
    async with database.transaction() as session:
        session.add(Store(**store("s-1")))
        await db.defer(session, _ADD_KEY, key("k-1", "s-1"))  # its store must be written first
    async with database.transaction() as session:
        assert (await session.get(ApiKey, "k-1")).store_id == "s-1"


async def test_a_savepoint_rolled_back_keeps_what_was_deferred_before_it(database) -> None:
    async with database.transaction() as session:
        await db.defer(session, _ADD, store("s-1"))
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await db.defer(session, _ADD, store("s-2"))
                raise RuntimeError("undo the savepoint")
    assert await names(database) == [("s-1", "Main street")]


async def test_a_deferred_write_that_breaks_a_constraint_fails_its_transaction(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            await db.defer(session, _RENAME, {"p_id": "s-1", "p_name": "Changed"})
            await db.defer(session, _ADD_KEY, key("k-1", "nowhere"))  # no such store
    assert await names(database) == [("s-1", "Main street")]


@pytest.mark.postgres_only
async def test_a_write_with_its_own_ctes_joins_a_batch(database) -> None:
    with_cte = text("WITH first AS (INSERT INTO stores (id, name, timezone, created_at) "
                    "VALUES (:a, 'It''s (one)', 'UTC', :at)) "
                    "INSERT INTO stores (id, name, timezone, created_at) VALUES (:b, 'Two', 'UTC', :at)")
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-0"))
    seen = statements_of(database)
    async with database.transaction() as session:
        await db.defer(session, with_cte, {"a": "s-1", "b": "s-2", "at": AT})
        await db.execute(session, _RENAME, {"p_id": "s-0", "p_name": "Zero"}, combine=True)
    assert len(seen) == 1
    assert await names(database) == [("s-0", "Zero"), ("s-1", "It's (one)"), ("s-2", "Two")]


def test_a_statement_is_taken_apart_into_its_ctes_and_its_main_statement() -> None:
    assert db._split_with("INSERT INTO t VALUES ($1)") == ((), "INSERT INTO t VALUES ($1)")
    with_ctes = "WITH a AS (INSERT INTO t VALUES ('x)(', f($1))), \"b\" AS (SELECT 1) UPDATE u SET v = $2"
    assert db._split_with(with_ctes) == (
        (("a", "INSERT INTO t VALUES ('x)(', f($1))"), ('"b"', "SELECT 1")), "UPDATE u SET v = $2")
    assert db._split_with("WITH RECURSIVE a AS (SELECT 1) SELECT 1") is None
    assert db._split_with("WITH a AS MATERIALIZED (SELECT 1) SELECT 1") is None
    assert db._split_with("UPDATE t SET v = 'costs $1'") is None


def test_a_batch_renumbers_its_placeholders_and_refuses_a_name_twice() -> None:
    one = db._Deferred.of("WITH a AS (INSERT INTO t VALUES ($1)) UPDATE t SET v = $2", [1, 2])
    two = db._Deferred.of("UPDATE u SET v = $1 WHERE id = $2", [3, 4])
    assert db._merged([one, two]) == (
        "WITH a AS (INSERT INTO t VALUES ($1)), deferred_0 AS (UPDATE t SET v = $2) UPDATE u SET v = $3 WHERE id = $4",
        [1, 2, 3, 4])
    assert db._merged([one, one]) is None


# -- reads announced ahead -----------------------------------------------------------------------------------------

_KEYS_OF = select(_KEYS.c.id, _KEYS.c.created_at).where(_KEYS.c.store_id == bindparam("p_store_id")).order_by(
    _KEYS.c.id.desc())


async def test_announced_reads_go_out_together_and_read_as_fetch_reads(database) -> None:
    async with database.transaction() as session:
        for n in (1, 2):
            await db.execute(session, _ADD, store(f"s-{n}", name=f"Store {n}"))
        for n in (1, 3, 2):
            await db.execute(session, _ADD_KEY, key(f"k-{n}", "s-1"))
    async with database.transaction() as session:
        alone = [await db.fetch(session, statement, params) for statement, params in (
            (_BY_ID, {"p_id": "s-2"}), (_KEYS_OF, {"p_store_id": "s-1"}), (_NAMED(session), {"p_ids": ["s-2", "s-1"]}),
            (_BY_ID, {"p_id": "s-9"}))]
    seen = statements_of(database)
    async with database.transaction() as session:
        db.prefetch(session, _BY_ID, {"p_id": "s-2"})
        db.prefetch(session, _KEYS_OF, {"p_store_id": "s-1"})
        db.prefetch(session, _NAMED(session), {"p_ids": ["s-2", "s-1"]})
        db.prefetch(session, _BY_ID, {"p_id": "s-9"})  # the same statement with other values: a read of its own
        together = [await db.fetch(session, _KEYS_OF, {"p_store_id": "s-1"}),
                    await db.fetch(session, _BY_ID, {"p_id": "s-2"}),
                    await db.fetch(session, _NAMED(session), {"p_ids": ["s-2", "s-1"]}),
                    await db.fetch(session, _BY_ID, {"p_id": "s-9"})]
    assert len(seen) == (1 if IS_POSTGRES else 4)
    assert together == [alone[1], alone[0], alone[2], alone[3]]
    assert [r.id for r in together[0]] == ["k-3", "k-2", "k-1"]  # each read's own order
    [row] = together[1]
    assert (row.name, row.created_at) == ("Store 2", AT) and row.created_at.tzinfo is not None  # the column types


async def test_a_read_announced_is_read_once_and_one_not_announced_goes_alone(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
    seen = statements_of(database)
    async with database.transaction() as session:
        db.prefetch(session, _BY_ID, {"p_id": "s-1"})
        db.prefetch(session, _COUNT)
        assert (await db.fetch(session, _COUNT))[0][0] == 1  # sends both
        await db.execute(session, _RENAME, {"p_id": "s-1", "p_name": "Renamed"})
        # Read when the reads went out together (SQLite reads at the fetch): for reads whose moment does not matter.
        expected = "Main street" if IS_POSTGRES else "Renamed"
        assert [r.name for r in await db.fetch(session, _BY_ID, {"p_id": "s-1"})] == [expected]
        assert [r.name for r in await db.fetch(session, _BY_ID, {"p_id": "s-1"})] == ["Renamed"]  # read again
    assert len(seen) == (3 if IS_POSTGRES else 4)


async def test_a_read_announced_alone_goes_out_as_itself(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
    seen = statements_of(database)
    async with database.transaction() as session:
        db.prefetch(session, _BY_ID, {"p_id": "s-1"})
        assert [r.name for r in await db.fetch(session, _BY_ID, {"p_id": "s-1"})] == ["Main street"]
    assert len(seen) == 1 and "ARRAY" not in seen[0], seen  # no arrays to wrap and unwrap


async def test_announced_reads_do_not_outlive_their_transaction(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
    session = database.session()
    db.prefetch(session, _BY_ID, {"p_id": "s-1"})
    db.prefetch(session, _COUNT)
    await db.fetch(session, _COUNT)  # reads both
    await session.rollback()
    async with database.transaction() as other:
        await db.execute(other, _RENAME, {"p_id": "s-1", "p_name": "Renamed"})
    assert [r.name for r in await db.fetch(session, _BY_ID, {"p_id": "s-1"})] == ["Renamed"]
    await session.close()


_BY_ID_LOCKED = _BY_ID.with_for_update()


@pytest.mark.postgres_only
async def test_a_locking_read_cannot_be_announced(database) -> None:
    async with database.transaction() as session:
        with pytest.raises(TypeError, match="locking clause"):
            db.prefetch(session, _BY_ID_LOCKED, {"p_id": "s-1"})


# -- a guard --------------------------------------------------------------------------------------------------------

class Stop(Exception):
    pass


def checker(checked: list) -> callable:
    """A guard's check that records the rows it was given and stops the work when the store it reads is missing."""

    def check(rows: list) -> None:
        checked.append([tuple(r) for r in rows])
        if not rows:
            raise Stop

    return check


@pytest.mark.postgres_only
async def test_a_guard_joins_the_first_announced_read_and_is_checked_before_its_rows_are_seen(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
    checked: list = []
    seen = statements_of(database)
    async with database.transaction() as session:
        db.guard(session, _BY_ID, {"p_id": "s-1"}, checker(checked))
        db.prefetch(session, _COUNT)
        assert checked == []  # announced: nothing sent
        assert (await db.fetch(session, _COUNT))[0][0] == 1
        assert checked == [[("s-1", "Main street", AT)]]
        await db.execute(session, _RENAME, {"p_id": "s-1", "p_name": "Renamed"})
    assert len(seen) == 2 and "ARRAY" in seen[0], seen  # the guard and the read in one statement; the rename
    assert checked == [[("s-1", "Main street", AT)]]  # checked once


@pytest.mark.postgres_only
@pytest.mark.parametrize("first", ["execute", "fetch", "orm", "deferred write", "commit"])
async def test_a_guard_goes_out_alone_before_anything_else_and_its_check_stops_the_work(database, first) -> None:
    """Whatever the session sends first (a statement of ours, the ORM's, deferred writes that no longer wait, the
    commit's), the guard goes before it, and a check that raises leaves nothing written."""
    checked: list = []
    seen = statements_of(database)
    with pytest.raises(Stop):
        async with database.transaction() as session:
            db.guard(session, _BY_ID, {"p_id": "s-9"}, checker(checked))  # no such store: the check raises
            if first == "execute":
                await db.execute(session, _ADD, store("s-1"))
            elif first == "fetch":
                await db.fetch(session, _COUNT)
            elif first == "orm":
                await session.execute(insert(STORES).values(**store("s-1")))
            elif first == "deferred write":
                await db.defer(session, _ADD, store("s-1"))
                await db.defer(session, _ADD, store("s-2"))  # the same write again: the first goes out now
            # "commit": the guard goes out with the commit, which it stops
    assert checked == [[]]
    assert seen and seen[0].startswith("SELECT") and "s-9" not in seen[0] and "FROM stores" in seen[0], seen
    assert await names(database) == []


@pytest.mark.postgres_only
async def test_a_guard_goes_before_deferred_writes_that_a_read_sends(database) -> None:
    checked: list = []
    seen = statements_of(database)
    with pytest.raises(Stop):
        async with database.transaction() as session:
            db.guard(session, _BY_ID, {"p_id": "s-9"}, checker(checked))
            db.prefetch(session, _COUNT)
            await db.defer(session, _ADD, store("s-1"))
            await db.fetch(session, _COUNT)
    assert checked == [[]] and len(seen) == 1, seen  # the guard alone, and nothing after it
    assert await names(database) == []


@pytest.mark.postgres_only
async def test_a_guard_goes_out_once(database) -> None:
    async with database.transaction() as session:
        await db.execute(session, _ADD, store("s-1"))
    checked: list = []
    session = database.session()
    try:
        db.guard(session, _BY_ID, {"p_id": "s-1"}, checker(checked))
        await db.fetch(session, _COUNT)
        await db.execute(session, _RENAME, {"p_id": "s-1", "p_name": "Renamed"})
        await session.rollback()
        await db.execute(session, _RENAME, {"p_id": "s-1", "p_name": "Renamed again"})
        await session.commit()
    finally:
        await session.close()
    assert len(checked) == 1 and await names(database) == [("s-1", "Renamed again")]


@pytest.mark.skipif(IS_POSTGRES, reason="SQLite's refusal")
async def test_sqlite_has_no_guard(database) -> None:
    async with database.transaction() as session:
        with pytest.raises(TypeError, match="PostgreSQL"):
            db.guard(session, _BY_ID, {"p_id": "s-1"}, checker([]))


# -- plans PostgreSQL keeps -----------------------------------------------------------------------------------------
#
# A prepared statement is planned afresh for its parameters (a custom plan) until, after five executions, its
# generic plan costs no more than the custom plans did; then PostgreSQL keeps the generic plan. A hot statement
# whose generic plan always looks dearer is planned at every execution: the commit's reads under its locks spent
# 0.2 to 0.46 ms there, the quote's voucher screening 0.2 to 1 ms. These compare the two plans' costs as the
# planner reckons them (sequential scans off, so that the indexes decide on the tests' near-empty tables).


def _literal(value) -> str:
    if isinstance(value, list):
        return "'{" + ",".join(str(v) for v in value) + "}'"
    return "'" + str(value).replace("'", "''") + "'"


async def _plans(session, statement, params: dict) -> dict[str, dict]:
    """The custom and the generic plan of a prebuilt statement for these parameters, as EXPLAIN's JSON."""
    entry, args = db._bound(statement, params, session.bind.dialect)
    await session.execute(text("SELECT 1"))  # the transaction begun: the settings below are its own
    connection = (await (await session.connection()).get_raw_connection()).driver_connection
    await connection.execute("SET LOCAL enable_seqscan = off")
    await connection.execute(f"PREPARE planned AS {entry.compiled.string}")
    plans = {}
    for mode in ("custom", "generic"):
        await connection.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
        explained = await connection.fetchval(
            f"EXPLAIN (FORMAT JSON) EXECUTE planned({', '.join(_literal(a) for a in args)})")
        plans[mode] = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    await connection.execute("DEALLOCATE planned")
    return plans


def _indexes(plan: dict) -> set[str]:
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= _indexes(child)
    return found


@pytest.mark.postgres_only
async def test_a_list_parameter_costs_the_same_to_both_plans(database) -> None:
    """``db.one_of``: a generic plan that guessed the list's length could never win against custom plans that
    counted it."""
    async with database.transaction() as session:
        plans = await _plans(session, _NAMED(session), {"p_ids": ["s-1"]})
    # Within what the planner allows a custom plan for its own planning (2.5 for a statement of one table).
    assert plans["generic"]["Total Cost"] <= plans["custom"]["Total Cost"] + 2.5, plans
    assert _indexes(plans["generic"]) == {"stores_pkey"}, plans


@pytest.mark.postgres_only
async def test_the_open_lots_read_keeps_its_partial_index_in_a_generic_plan(database) -> None:
    """``remaining > 0`` written as the index's own literal: as a parameter, a generic plan could not use the
    index, scanned the table instead, and so never won."""
    from service.ledger.repository import _OPEN_LOTS

    async with database.transaction() as session:
        plans = await _plans(session, _OPEN_LOTS(session), {"p_member_id": "m-1", "p_offset": 0, "p_limit": 16})
    assert _indexes(plans["generic"]) == {"ix_point_lots_open"}, plans
