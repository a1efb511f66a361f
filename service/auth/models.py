from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from service.db import UTCDateTime


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    role: str = Field(max_length=8)
    store_id: str | None = Field(default=None, max_length=64, foreign_key="stores.id")
    name: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
