from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import insert_unless_duplicate
from service.program.models import ProgramRow, Store


async def get_program(session: AsyncSession) -> ProgramRow | None:
    return (await session.execute(select(ProgramRow).where(ProgramRow.id == 1))).scalar_one_or_none()


async def get_program_version(session: AsyncSession) -> int | None:
    """The program's version alone: enough to know whether a cached parse is still current."""
    return (await session.execute(select(ProgramRow.version).where(ProgramRow.id == 1))).scalar_one_or_none()


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
