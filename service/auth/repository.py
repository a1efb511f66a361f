from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey
from service.db import insert_unless_duplicate


async def find_active_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    result = await session.execute(
        select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    return result.scalar_one_or_none()


async def get(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def add(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)
    await session.flush()


async def add_if_absent(session: AsyncSession, key: ApiKey) -> bool:
    """Insert unless a key with the same hash exists (several workers may start at once)."""
    return await insert_unless_duplicate(session, key)


async def list_page(session: AsyncSession, *, after: str | None, limit: int) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id).limit(limit)
    if after:
        query = query.where(ApiKey.id > after)
    return list((await session.execute(query)).scalars())


async def revoke(session: AsyncSession, key_id: str, at: datetime) -> None:
    await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=at)
    )


async def revoke_bootstrap_keys_but(session: AsyncSession, key_hash: str, at: datetime) -> list[str]:
    """Revoke every active bootstrap key but the one with ``key_hash``; their ids."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.id.startswith("key_bootstrap_"), ApiKey.key_hash != key_hash,
                             ApiKey.revoked_at.is_(None)).values(revoked_at=at).returning(ApiKey.id))
    return sorted(result.scalars())
