"""Committed checkout transactions and their returns. Per-line figures (net, discount, points earned and
burned per line) are kept on the transaction so that returns reverse them without re-running the rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime

STATUSES = ("committed", "voided", "partially_returned", "returned")


class CheckoutTransaction(SQLModel, table=True):
    __tablename__ = "checkout_transactions"
    __table_args__ = (
        UniqueConstraint("store_id", "receipt_id", name="uq_checkout_transactions_store_receipt"),
        CheckConstraint("status IN ('committed', 'voided', 'partially_returned', 'returned')",
                        name="ck_checkout_transactions_status"),
        CheckConstraint("subtotal >= 0 AND discount >= 0 AND net >= 0 AND net = subtotal - discount",
                        name="ck_checkout_transactions_totals"),
        CheckConstraint("points_burned >= 0 AND points_earned >= 0", name="ck_checkout_transactions_points"),
        Index("ix_checkout_transactions_member_id_occurred_at", "member_id", "occurred_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    store_id: str = Field(max_length=64, foreign_key="stores.id")
    receipt_id: str = Field(max_length=64)
    member_id: str = Field(max_length=32, foreign_key="members.id")
    status: str = Field(max_length=20)
    currency: str = Field(max_length=3)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    voided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    subtotal: int = Field(sa_type=BigInteger)
    discount: int = Field(sa_type=BigInteger)
    net: int = Field(sa_type=BigInteger)
    points_burned: int = Field(sa_type=BigInteger)
    points_earned: int = Field(sa_type=BigInteger)
    qualifying_spend: int = Field(sa_type=BigInteger)
    points_balance_after: int = Field(sa_type=BigInteger)
    wallet_balance_after: int = Field(sa_type=BigInteger)  # cash and bonus together, as the answer shows it
    lines: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    applied: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    ledger_transaction_id: str | None = Field(default=None, max_length=32, foreign_key="ledger_transactions.id")


class CheckoutReturn(SQLModel, table=True):
    __tablename__ = "checkout_returns"
    __table_args__ = (
        Index("ix_checkout_returns_transaction_id", "transaction_id"),
        Index("uq_checkout_returns_transaction_receipt", "transaction_id", "receipt_id", unique=True),
    )

    id: str = Field(primary_key=True, max_length=32)
    transaction_id: str = Field(max_length=32, foreign_key="checkout_transactions.id")
    receipt_id: str | None = Field(default=None, max_length=64)  # the return slip's number, unique per sale
    lines: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    points_clawed_back: int = Field(sa_type=BigInteger)
    points_refunded: int = Field(sa_type=BigInteger)
    qualifying_spend: int = Field(sa_type=BigInteger)
    ledger_transaction_id: str | None = Field(default=None, max_length=32, foreign_key="ledger_transactions.id")
    created_at: datetime = Field(sa_type=UTCDateTime)
