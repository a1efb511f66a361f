"""The audit log: every admin change is written here, in the same transaction as the change, and read back
newest first by ``GET /v1/audit-log``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import repository
from service.audit.schemas import AuditEntryPublic
from service.clock import Clock


async def record(
    session: AsyncSession, clock: Clock, *, actor: str | None, action: str, target: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    await repository.add(session, {"at": clock.now(), "actor": actor, "action": action, "target": target,
                                   "data": data})


async def page(session: AsyncSession, *, before: int | None, limit: int, action: str | None = None,
               target: str | None = None, actor: str | None = None) -> list[AuditEntryPublic]:
    rows = await repository.page(session, before=before, limit=limit, action=action, target=target, actor=actor)
    return [AuditEntryPublic(id=str(r.id), at=r.at, actor=r.actor, action=r.action, target=r.target, data=r.data)
            for r in rows]
