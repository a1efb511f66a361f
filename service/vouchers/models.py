"""Voucher tables.

- ``voucher_campaigns``: configuration (reference data): what a voucher takes off, on what, for whom, how long,
  how many. ``issued_count`` is the campaign's running count of vouchers issued (revoked ones given back); the
  conditional update that raises it is also the lock that serializes issuers of one campaign, so neither the
  total nor the per-member limit can be overrun by concurrent issue.
- ``vouchers``: one code. ``active`` → ``redeemed`` (by a checkout commit; back to ``active`` on void while still
  valid), ``expired`` after ``valid_until``, ``void`` when revoked (the sale that earned it was voided).
  ``member_id`` is the owner (null: a bearer code anyone may use; redeeming it makes the member its owner).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime

KINDS = ("amount_off", "percent_off", "free_item")
STATUSES = ("active", "redeemed", "expired", "void")


class VoucherCampaign(SQLModel, table=True):
    __tablename__ = "voucher_campaigns"
    __table_args__ = (
        CheckConstraint("kind IN ('amount_off', 'percent_off', 'free_item')", name="ck_voucher_campaigns_kind"),
        CheckConstraint("issued_count >= 0 AND (total_limit IS NULL OR issued_count <= total_limit)",
                        name="ck_voucher_campaigns_issued_count"),
        Index("ix_voucher_campaigns_auto_issue", "auto_issue_spend_threshold"),
    )

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=100)
    kind: str = Field(max_length=16)
    value: int | None = Field(default=None, sa_type=BigInteger)
    min_spend: int = Field(sa_type=BigInteger)
    skus: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    categories: list[Any] = Field(sa_column=Column(JSON, nullable=False))
    valid_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    valid_days: int | None = None
    per_member_limit: int | None = None
    total_limit: int | None = Field(default=None, sa_type=BigInteger)
    stackable: bool
    audience: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    auto_issue_spend_threshold: int | None = Field(default=None, sa_type=BigInteger)
    active: bool
    issued_count: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Voucher(SQLModel, table=True):
    __tablename__ = "vouchers"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'redeemed', 'expired', 'void')", name="ck_vouchers_status"),
        Index("ux_vouchers_code", "code", unique=True),
        Index("ix_vouchers_member_id_campaign_id", "member_id", "campaign_id"),
        Index("ix_vouchers_campaign_id", "campaign_id"),
        Index("ix_vouchers_issued_by", "issued_by"),
        Index("ix_vouchers_redeemed_by", "redeemed_by"),
        Index("ix_vouchers_status_valid_until", "status", "valid_until"),
    )

    id: str = Field(primary_key=True, max_length=32)
    code: str = Field(max_length=32)
    campaign_id: str = Field(max_length=32, foreign_key="voucher_campaigns.id")
    member_id: str | None = Field(default=None, max_length=32, foreign_key="members.id")
    status: str = Field(max_length=12)
    issued_at: datetime = Field(sa_type=UTCDateTime)
    valid_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    issued_by: str | None = Field(default=None, max_length=32)  # the checkout transaction that earned it
    # The campaign's spend_threshold that sale reached (its returns are judged against it; migration 0021)
    earned_threshold: int | None = Field(default=None, sa_type=BigInteger)
    redeemed_by: str | None = Field(default=None, max_length=32)  # the checkout transaction that used it
    redeemed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    changed_at: datetime = Field(sa_type=UTCDateTime)
