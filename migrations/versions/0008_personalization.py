"""Personalization: running activity figures per member, daily buckets, segment thresholds; referral rewards.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "member_activity",
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), primary_key=True),
        sa.Column("purchases", sa.Integer, nullable=False),
        sa.Column("first_purchase_at", TS, nullable=True),
        sa.Column("last_purchase_at", TS, nullable=True),
        sa.Column("quadrant", sa.String(16), nullable=True),
        sa.Column("lifecycle", sa.String(16), nullable=True),
        sa.Column("segmented_as_of", TS, nullable=True),
        sa.Column("birthday_bonus_year", sa.Integer, nullable=True),
        sa.Column("birthday_bonus_transaction_id", sa.String(32), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "member_days",
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("transactions", sa.Integer, nullable=False),
        sa.Column("spend", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "segment_thresholds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("min_frequency", sa.Integer, nullable=False),
        sa.Column("min_monetary", sa.BigInteger, nullable=False),
        sa.Column("active_members", sa.Integer, nullable=False),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("computed_at", TS, nullable=False),
    )
    op.create_table(
        "referral_rewards",
        sa.Column("referee_id", sa.String(32), sa.ForeignKey("members.id"), primary_key=True),
        sa.Column("referrer_id", sa.String(32), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("checkout_transactions.id"), nullable=False),
        sa.Column("referee_points", sa.Integer, nullable=False),
        sa.Column("referrer_points", sa.Integer, nullable=False),
        sa.Column("referrer_ledger_transaction_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"),
                  nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('rewarded', 'reversed')", name="ck_referral_rewards_status"),
    )
    op.create_index("ix_referral_rewards_transaction_id", "referral_rewards", ["transaction_id"])
    _backfill()


def _backfill() -> None:
    """The running figures of the sales committed before this revision: one day row per member and UTC day (net
    spend after returns from ``tier_spend``), one activity row per member. Voided sales do not count."""
    postgres = op.get_bind().dialect.name == "postgresql"
    day = "CAST(t.occurred_at AT TIME ZONE 'UTC' AS date)" if postgres else "date(t.occurred_at)"
    op.execute(f"""
        INSERT INTO member_days (member_id, day, transactions, spend)
        SELECT t.member_id, {day}, COUNT(*), COALESCE(SUM(s.amount), 0)
        FROM checkout_transactions t LEFT JOIN tier_spend s ON s.transaction_id = t.id
        WHERE t.status <> 'voided'
        GROUP BY t.member_id, {day}
    """)
    op.execute("""
        INSERT INTO member_activity (member_id, purchases, first_purchase_at, last_purchase_at, updated_at)
        SELECT member_id, COUNT(*), MIN(occurred_at), MAX(occurred_at), MAX(created_at)
        FROM checkout_transactions WHERE status <> 'voided'
        GROUP BY member_id
    """)


def downgrade() -> None:
    op.drop_table("referral_rewards")
    op.drop_table("segment_thresholds")
    op.drop_table("member_days")
    op.drop_table("member_activity")
