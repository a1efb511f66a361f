"""Tiers: qualifying spend per transaction, the member's tier dates, tier history.

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tier_spend",
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("checkout_transactions.id"), primary_key=True),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_tier_spend_member_id_occurred_at", "tier_spend", ["member_id", "occurred_at"])
    op.create_table(
        "tier_states",
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), primary_key=True),
        sa.Column("attained_at", TS, nullable=True),
        sa.Column("review_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_tier_states_review_at", "tier_states", ["review_at"])
    op.create_table(
        "tier_history",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("from_code", sa.String(32), nullable=True),
        sa.Column("to_code", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("checkout_transactions.id"), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_tier_history_member_id_id", "tier_history", ["member_id", "id"])
    op.create_index("ix_tier_history_transaction_id", "tier_history", ["transaction_id"])


def downgrade() -> None:
    op.drop_table("tier_history")
    op.drop_table("tier_states")
    op.drop_table("tier_spend")
