from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ADJUSTMENT = 10**9


class Expiring(BaseModel):
    amount: int
    expires_at: datetime


class PointsPublic(BaseModel):
    balance: int = Field(description="May be negative after earned points were returned once spent.")
    expiring: list[Expiring] = Field(description="Points still held, by expiry, soonest first.")


class LedgerEntryPublic(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # `reason` is there, null or not

    id: str
    transaction_id: str
    account: str
    amount: int
    kind: str
    created_at: datetime
    reason: str | None = None


class LedgerPage(BaseModel):
    data: list[LedgerEntryPublic]
    next_cursor: str | None


class AdjustmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"amount": 250, "reason": "Goodwill: the coffee machine was out of order"}]})

    amount: Annotated[int, Field(strict=True, ge=-MAX_ADJUSTMENT, le=MAX_ADJUSTMENT)] = Field(
        description="Points to add (positive) or remove (negative); not zero.")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class AdjustmentEntry(BaseModel):
    account: str
    amount: int
    kind: str


class LedgerTransactionPublic(BaseModel):
    id: str
    kind: str
    member_id: str
    reason: str | None
    created_at: datetime
    entries: list[AdjustmentEntry]
    balances_after: dict[str, int]
