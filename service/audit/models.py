"""``audit_log``: one row per admin change, written in the same transaction as the change; never updated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    actor: str | None = Field(default=None, max_length=40)  # the API key's id (None: the command line)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
