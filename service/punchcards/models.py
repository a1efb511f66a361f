"""Punch-card tables. Stamps themselves are ledger accounts (``stamps:<program id>``); these rows hold the
programs and the rewards the stamps turned into.

- ``punch_programs``: configuration (reference data): what earns a stamp, how many make a reward, what the
  reward makes free and for how long it can be used.
- ``punch_rewards``: one free item for one member: ``available`` → ``redeemed`` (by a checkout commit; back to
  ``available`` on void), ``expired`` after its validity, ``revoked`` when a return takes back its stamps.
  Each keeps the stamps it cost (``stamps_cost``): revoking it gives back those, whatever the programme asks now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime

REWARD_STATUSES = ("available", "redeemed", "expired", "revoked")


class PunchProgram(SQLModel, table=True):
    __tablename__ = "punch_programs"
    __table_args__ = (
        CheckConstraint("stamps_required >= 1", name="ck_punch_programs_stamps_required"),
        CheckConstraint("reward_valid_days >= 1", name="ck_punch_programs_reward_valid_days"),
        CheckConstraint("reward_max_value IS NULL OR reward_max_value >= 0", name="ck_punch_programs_max_value"),
    )

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=100)
    qualifying_skus: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    qualifying_categories: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    stamps_required: int
    reward_skus: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    reward_categories: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    reward_max_value: int | None = Field(default=None, sa_type=BigInteger)
    reward_valid_days: int
    active: bool
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class PunchReward(SQLModel, table=True):
    __tablename__ = "punch_rewards"
    __table_args__ = (
        CheckConstraint("status IN ('available', 'redeemed', 'expired', 'revoked')", name="ck_punch_rewards_status"),
        CheckConstraint("stamps_cost >= 1", name="ck_punch_rewards_stamps_cost"),
        Index("ix_punch_rewards_member_id_program_id", "member_id", "program_id"),
        Index("ix_punch_rewards_status_expires_at", "status", "expires_at"),
        Index("ix_punch_rewards_issued_by", "issued_by"),
        Index("ix_punch_rewards_redeemed_by", "redeemed_by"),
    )

    id: str = Field(primary_key=True, max_length=32)
    member_id: str = Field(max_length=32, foreign_key="members.id")
    program_id: str = Field(max_length=32, foreign_key="punch_programs.id")
    status: str = Field(max_length=16)
    issued_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    issued_by: str | None = Field(default=None, max_length=32)  # the checkout transaction that earned it
    redeemed_by: str | None = Field(default=None, max_length=32)  # the checkout transaction that used it
    changed_at: datetime = Field(sa_type=UTCDateTime)
    # The stamps the reward was issued for (the programme's stamps_required then, as the ledger's ``reward`` entry
    # took them): what revoking it gives back, though the programme may ask another number since.
    stamps_cost: int
    # What it makes free, as its programme said when it was issued (rules.Terms; migration 0022): the reward's
    # items (the qualifying ones when the programme named none) and its cap.
    free_skus: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    free_categories: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    free_max_value: int | None = Field(default=None, sa_type=BigInteger)
