"""``service.db.fetch`` and ``execute``: the hot paths' prebuilt statements, which skip SQLAlchemy's execution
layers on PostgreSQL, behave as ``session.execute`` does on both dialects: values and rows converted by the
column types, the session's transaction and pending ORM changes respected, driver errors raised as
SQLAlchemy's, statement listeners told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from service import db
from service.program.models import Store

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
