"""Ledger tables (DESIGN §3). Only :mod:`service.ledger.service` writes them.

- ``ledger_accounts``: one asset for one owner, a member (``member_id``) or a gift card (``gift_card_id``).
  Owned accounts carry a cached ``balance`` (guarded by a row lock); the program's own accounts
  (``program:points_issued`` …) have no owner and ``balance`` NULL: their balance is the sum of their entries.
- ``ledger_transactions``: the entries of one business event; a reversal references what it reverses.
- ``ledger_entries``: append-only (the database refuses UPDATE, and DELETE on PostgreSQL); they sum to zero per
  asset in every transaction.
- ``point_lots``: points earned together, with their expiry and what remains of them.
- ``point_lot_draws``: which lots each debit drew from (positive) and what was put back (negative), so that a
  void restores exactly the lots a burn consumed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime

# 64-bit ids on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# An account has at most one owner, a member or a gift card; owned accounts carry a balance, the program's own
# accounts (no owner) do not.
OWNER_CHECK = ("(member_id IS NULL AND gift_card_id IS NULL AND balance IS NULL)"
               " OR (member_id IS NOT NULL AND gift_card_id IS NULL AND balance IS NOT NULL)"
               " OR (member_id IS NULL AND gift_card_id IS NOT NULL AND balance IS NOT NULL)")


class LedgerAccount(SQLModel, table=True):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("member_id", "kind", name="uq_ledger_accounts_member_kind"),
        UniqueConstraint("gift_card_id", "kind", name="uq_ledger_accounts_gift_card_kind"),
        CheckConstraint(OWNER_CHECK, name="ck_ledger_accounts_balance_owner"),
        CheckConstraint("balance >= 0 OR kind NOT IN ('wallet_cash', 'wallet_bonus', 'gift_card')",
                        name="ck_ledger_accounts_stored_value_not_negative"),
    )

    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=64)
    asset: str = Field(max_length=64)
    member_id: str | None = Field(default=None, max_length=32, foreign_key="members.id")
    gift_card_id: str | None = Field(default=None, max_length=32, foreign_key="gift_cards.id")
    balance: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(sa_type=UTCDateTime)


class LedgerTransaction(SQLModel, table=True):
    __tablename__ = "ledger_transactions"
    __table_args__ = (
        Index("ix_ledger_transactions_reference", "reference"),
        Index("ix_ledger_transactions_reverses_id", "reverses_id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=32)
    member_id: str | None = Field(default=None, max_length=32, foreign_key="members.id")
    store_id: str | None = Field(default=None, max_length=64, foreign_key="stores.id")
    reverses_id: str | None = Field(default=None, max_length=32, foreign_key="ledger_transactions.id")
    reference: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="ck_ledger_entries_amount_not_zero"),
        Index("ix_ledger_entries_transaction_id", "transaction_id"),
        Index("ix_ledger_entries_account_id", "account_id"),
        Index("ix_ledger_entries_member_id_id", "member_id", "id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    transaction_id: str = Field(max_length=32, foreign_key="ledger_transactions.id")
    account_id: str = Field(max_length=64, foreign_key="ledger_accounts.id")
    member_id: str | None = Field(default=None, max_length=32, foreign_key="members.id")
    asset: str = Field(max_length=64)
    amount: int = Field(sa_type=BigInteger)
    kind: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)


class PointLot(SQLModel, table=True):
    __tablename__ = "point_lots"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_point_lots_amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="ck_point_lots_remaining_in_range"),
        # Open lots only: a debit reads them in expiry order without touching the member's exhausted ones.
        Index("ix_point_lots_open", "member_id", "expires_at", "id", postgresql_where=text("remaining > 0"),
              sqlite_where=text("remaining > 0")),
        Index("ix_point_lots_expires_at", "expires_at"),
        Index("ix_point_lots_transaction_id", "transaction_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    member_id: str = Field(max_length=32, foreign_key="members.id")
    account_id: str = Field(max_length=64, foreign_key="ledger_accounts.id")
    transaction_id: str = Field(max_length=32, foreign_key="ledger_transactions.id")
    earned_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    amount: int = Field(sa_type=BigInteger)
    remaining: int = Field(sa_type=BigInteger)


class PointLotDraw(SQLModel, table=True):
    __tablename__ = "point_lot_draws"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="ck_point_lot_draws_amount_not_zero"),
        Index("ix_point_lot_draws_origin_transaction_id", "origin_transaction_id"),
        Index("ix_point_lot_draws_lot_id", "lot_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    lot_id: int = Field(sa_column=Column(BigId, ForeignKey("point_lots.id"), nullable=False))
    transaction_id: str = Field(max_length=32, foreign_key="ledger_transactions.id")
    origin_transaction_id: str = Field(max_length=32, foreign_key="ledger_transactions.id")
    amount: int = Field(sa_type=BigInteger)
