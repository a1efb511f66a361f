"""Tier tables (DESIGN §5). Only :mod:`service.tiers.service` writes them.

- ``tier_spend``: the qualifying spend of each committed checkout transaction, at its ``occurred_at``; a return
  lowers ``amount``, a void sets it to 0. Reading a member's qualifying spend is one indexed range sum over
  ``(member_id, occurred_at)`` that touches only the rows inside the window, never the member's whole history,
  and is exact at the window's edges (to the microsecond).
- ``tier_spend_days``: the same spend summed per member and UTC day, kept in step with ``tier_spend`` in the same
  transaction. The window's spend is the whole days inside it (at most a window's worth of rows per member) plus
  the transactions of the one partial day at its start: exact, and its cost does not grow with the history
  however busy the member.
- ``tier_states``: per member, when the current tier was attained and when it is next reviewed (the code itself
  is ``members.tier_code``, which the checkout reads). Its row is the lock that serializes tier changes.
- ``tier_history``: every change, with its reason (``qualifying_spend`` for an upgrade, ``review`` for a drop).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime
from service.ledger.models import BigId


class TierSpend(SQLModel, table=True):
    __tablename__ = "tier_spend"
    __table_args__ = (Index("ix_tier_spend_member_id_occurred_at", "member_id", "occurred_at"),)

    transaction_id: str = Field(primary_key=True, max_length=32, foreign_key="checkout_transactions.id")
    member_id: str = Field(max_length=32, foreign_key="members.id")
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    amount: int = Field(sa_type=BigInteger)


class TierSpendDay(SQLModel, table=True):
    __tablename__ = "tier_spend_days"

    member_id: str = Field(primary_key=True, max_length=32, foreign_key="members.id")
    day: date = Field(primary_key=True)
    amount: int = Field(sa_type=BigInteger)


class TierState(SQLModel, table=True):
    __tablename__ = "tier_states"
    __table_args__ = (Index("ix_tier_states_review_at", "review_at"),)

    member_id: str = Field(primary_key=True, max_length=32, foreign_key="members.id")
    attained_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    review_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class TierHistory(SQLModel, table=True):
    __tablename__ = "tier_history"
    __table_args__ = (Index("ix_tier_history_member_id_id", "member_id", "id"),
                      Index("ix_tier_history_transaction_id", "transaction_id"))

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    member_id: str = Field(max_length=32, foreign_key="members.id")
    from_code: str | None = Field(default=None, max_length=32)
    to_code: str = Field(max_length=32)
    at: datetime = Field(sa_type=UTCDateTime)
    reason: str = Field(max_length=32)
    transaction_id: str | None = Field(default=None, max_length=32, foreign_key="checkout_transactions.id")
    created_at: datetime = Field(sa_type=UTCDateTime)
