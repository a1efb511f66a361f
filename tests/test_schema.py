"""The tables the models describe are the tables the migrations build (on the engine under test)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import service.app  # noqa: F401  (imports every model)
from service.db import create_engine


async def test_models_match_the_migrations(database_url):
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}),
                                              SQLModel.metadata))
    finally:
        await engine.dispose()
    assert diff == []
