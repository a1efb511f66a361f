from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit.models import AuditEntry


async def add(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(AuditEntry).values(**values))


async def page(session: AsyncSession, *, before: int | None, limit: int, action: str | None, target: str | None,
               actor: str | None) -> list[AuditEntry]:
    """Newest first, from the entry before ``before``; each filter an exact match."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    for column, value in ((AuditEntry.action, action), (AuditEntry.target, target), (AuditEntry.actor, actor)):
        if value is not None:
            query = query.where(column == value)
    return list((await session.execute(query)).scalars())
