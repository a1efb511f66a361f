"""Personalization tables. Only :mod:`service.personalization.service` writes them.

- ``member_activity``: per member, running figures kept up to date inside the commit, void and return
  transactions (purchases, first and last purchase), the segment the last ``loyalty sweep`` gave the member
  and the one before it, and the year of the last birthday bonus. Reading it is one primary-key look-up,
  whatever the history.
- ``member_days``: per member and UTC day (the day of each sale's ``occurred_at``), the number of committed
  sales and their net spend (returns subtract, voids remove). Trailing-window figures are one indexed range sum
  over the days inside the window; a back-dated sale lands on its own day.
- ``segment_thresholds``: the one row of quadrant thresholds the last sweep computed.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime


class MemberActivity(SQLModel, table=True):
    __tablename__ = "member_activity"

    member_id: str = Field(primary_key=True, max_length=32, foreign_key="members.id")
    purchases: int = Field(default=0)
    first_purchase_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_purchase_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    quadrant: str | None = Field(default=None, max_length=16)
    lifecycle: str | None = Field(default=None, max_length=16)
    segmented_as_of: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # What the member was before the last sweep that segmented them, and that earlier sweep's ``as_of``: the
    # segment report's movement between two sweeps.
    previous_quadrant: str | None = Field(default=None, max_length=16)
    previous_lifecycle: str | None = Field(default=None, max_length=16)
    previous_segmented_as_of: datetime | None = Field(default=None, sa_type=UTCDateTime)
    birthday_bonus_year: int | None = None
    birthday_bonus_transaction_id: str | None = Field(default=None, max_length=32)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class MemberDay(SQLModel, table=True):
    __tablename__ = "member_days"

    member_id: str = Field(primary_key=True, max_length=32, foreign_key="members.id")
    day: date = Field(primary_key=True)
    transactions: int = Field(default=0)
    spend: int = Field(default=0, sa_type=BigInteger)


class SegmentThresholds(SQLModel, table=True):
    __tablename__ = "segment_thresholds"

    id: int = Field(default=1, primary_key=True)
    min_frequency: int
    min_monetary: int = Field(sa_type=BigInteger)
    active_members: int
    as_of: datetime = Field(sa_type=UTCDateTime)
    computed_at: datetime = Field(sa_type=UTCDateTime)
