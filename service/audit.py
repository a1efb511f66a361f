"""The audit log: every admin change is written here, in the same transaction as the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from service.clock import Clock
from service.db import UTCDateTime


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    actor: str | None = Field(default=None, max_length=40)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


async def record(
    session: AsyncSession, clock: Clock, *, actor: str | None, action: str, target: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(AuditEntry).values(at=clock.now(), actor=actor, action=action, target=target, data=data)
    )
