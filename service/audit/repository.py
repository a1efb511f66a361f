from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit.models import AuditEntry
from service.db import defer_row


async def add(session: AsyncSession, values: dict[str, Any]) -> None:
    """Nothing reads the new entry back: on PostgreSQL it goes out with the change's next statement
    (``db.defer_row``), so that an audited change costs no round trip of its own."""
    await defer_row(session, _TABLE, values)


_TABLE = AuditEntry.__table__


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
