"""Referral rewards: one row per referred member once their first qualifying purchase is committed.

``status`` is ``rewarded`` (both sides credited by ``transaction_id``) or ``reversed`` (that sale was voided:
both credits were clawed back and a later qualifying purchase may reward again). The row's primary key (the
referred member) makes the reward happen once; the referred member's ledger lock serializes the decision.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime


class ReferralReward(SQLModel, table=True):
    __tablename__ = "referral_rewards"
    __table_args__ = (
        CheckConstraint("status IN ('rewarded', 'reversed')", name="ck_referral_rewards_status"),
        Index("ix_referral_rewards_transaction_id", "transaction_id"),
    )

    referee_id: str = Field(primary_key=True, max_length=32, foreign_key="members.id")
    referrer_id: str = Field(max_length=32, foreign_key="members.id")
    status: str = Field(max_length=10)
    transaction_id: str = Field(max_length=32, foreign_key="checkout_transactions.id")
    referee_points: int
    referrer_points: int
    referrer_ledger_transaction_id: str | None = Field(default=None, max_length=32,
                                                       foreign_key="ledger_transactions.id")
    # The program's min_first_spend the sale qualified under: its returns are judged against it, not the figure in
    # force when they come (None for rewards before migration 0019: the program's current figure).
    min_first_spend: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: datetime = Field(sa_type=UTCDateTime)
