from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime


class ProgramRow(SQLModel, table=True):
    """The one program of this deployment: its configuration as a versioned document."""

    __tablename__ = "program"

    id: int = Field(default=1, primary_key=True)
    version: int
    # Raised by every change to stores, punch card programs and voucher campaigns (see program.catalog).
    catalog_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Store(SQLModel, table=True):
    __tablename__ = "stores"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=100)
    timezone: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
