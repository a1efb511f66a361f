from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import insert_unless_duplicate
from service.program.models import ProgramRow, Store


async def get_program(session: AsyncSession) -> ProgramRow | None:
    return (await session.execute(select(ProgramRow).where(ProgramRow.id == 1))).scalar_one_or_none()


_VERSIONS = select(ProgramRow.version, ProgramRow.catalog_version).where(ProgramRow.id == 1)
# The same two versions as columns, for a read elsewhere that carries them along (one round trip, not two).
VERSION_COLUMNS = (select(ProgramRow.version).where(ProgramRow.id == 1).scalar_subquery().label("program_version"),
                   select(ProgramRow.catalog_version).where(ProgramRow.id == 1).scalar_subquery()
                   .label("catalog_version"))
_RAISE_CATALOG = (update(ProgramRow).where(ProgramRow.id == 1)
                  .values(catalog_version=ProgramRow.catalog_version + 1)
                  .execution_options(synchronize_session=False))


async def get_versions(session: AsyncSession) -> tuple[int, int] | None:
    """The program's version and the catalog's: enough to know whether cached copies are still current."""
    row = (await session.execute(_VERSIONS)).first()
    return None if row is None else (row[0], row[1])


async def raise_catalog_version(session: AsyncSession) -> None:
    await session.execute(_RAISE_CATALOG)


async def insert_program_if_absent(session: AsyncSession, row: ProgramRow) -> None:

    await insert_unless_duplicate(session, row)


async def update_program(session: AsyncSession, *, expected_version: int, values: dict) -> bool:
    """Compare-and-set on ``version``: False when someone else changed the program first."""
    result = await session.execute(
        update(ProgramRow).where(ProgramRow.id == 1, ProgramRow.version == expected_version).values(**values)
    )
    return result.rowcount == 1


async def get_store(session: AsyncSession, store_id: str) -> Store | None:
    return await session.get(Store, store_id)


async def add_store(session: AsyncSession, store: Store) -> bool:

    return await insert_unless_duplicate(session, store)


async def list_stores(session: AsyncSession, *, after: str | None, limit: int) -> list[Store]:
    query = select(Store).order_by(Store.id).limit(limit)
    if after:
        query = query.where(Store.id > after)
    return list((await session.execute(query)).scalars())
