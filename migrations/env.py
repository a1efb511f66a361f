"""Alembic environment: runs the migrations on the async engine named by ``sqlalchemy.url`` (or
``LOYALTY_DATABASE_URL``). SQLite needs batch mode for ALTERs; ``render_as_batch`` covers it."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from service.db import create_engine
from service.settings import Settings

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A batch ALTER rebuilds the table (copy, drop, rename); with foreign keys enforced, dropping a table that
        # others refer to fails. SQLite only switches them off outside a transaction, so before the first one;
        # every reference is checked once the migrations are done.
        _sqlite_pragma(connection, "PRAGMA foreign_keys = OFF")
    context.configure(connection=connection, target_metadata=None, render_as_batch=sqlite,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        broken = _sqlite_pragma(connection, "PRAGMA foreign_key_check")
        _sqlite_pragma(connection, "PRAGMA foreign_keys = ON")
        if broken:
            raise RuntimeError(f"foreign keys broken by the migrations: {broken[:10]}")


def _sqlite_pragma(connection: Connection, statement: str) -> list:
    """Run a PRAGMA on the driver's connection, outside any transaction SQLAlchemy would begin."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
        return list(cursor.fetchall() or [])
    finally:
        cursor.close()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())
