from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from service.program.schemas import StoreId
from service.text import PRINTABLE


class Role(StrEnum):
    admin = "admin"
    pos = "pos"
    app = "app"


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"role": "pos", "store_id": "berlin-01", "name": "till 1"}]})

    role: Role
    store_id: StoreId | None = Field(default=None, description="Required for a `pos` key: the store it serves.")
    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=PRINTABLE)


class ApiKeyPublic(BaseModel):
    id: str
    prefix: str = Field(description="The first characters of the key, to tell keys apart.")
    role: Role
    store_id: str | None
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(BaseModel):
    id: str
    key: str = Field(description="The secret key. Shown once: only its hash is kept.")
    role: Role
    store_id: str | None
    name: str | None


class ApiKeyList(BaseModel):
    data: list[ApiKeyPublic]
    next_cursor: str | None
