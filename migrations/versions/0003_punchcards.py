"""Punch cards: programs and rewards (stamps are ledger accounts ``stamps:<program id>``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "punch_programs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("qualifying_skus", sa.JSON, nullable=False),
        sa.Column("qualifying_categories", sa.JSON, nullable=False),
        sa.Column("stamps_required", sa.Integer, nullable=False),
        sa.Column("reward_skus", sa.JSON, nullable=False),
        sa.Column("reward_categories", sa.JSON, nullable=False),
        sa.Column("reward_max_value", sa.BigInteger, nullable=True),
        sa.Column("reward_valid_days", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("stamps_required >= 1", name="ck_punch_programs_stamps_required"),
        sa.CheckConstraint("reward_valid_days >= 1", name="ck_punch_programs_reward_valid_days"),
        sa.CheckConstraint("reward_max_value IS NULL OR reward_max_value >= 0", name="ck_punch_programs_max_value"),
    )
    op.create_table(
        "punch_rewards",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("program_id", sa.String(32), sa.ForeignKey("punch_programs.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("issued_by", sa.String(32), nullable=True),
        sa.Column("redeemed_by", sa.String(32), nullable=True),
        sa.Column("changed_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('available', 'redeemed', 'expired', 'revoked')",
                           name="ck_punch_rewards_status"),
    )
    op.create_index("ix_punch_rewards_member_id_program_id", "punch_rewards", ["member_id", "program_id"])
    op.create_index("ix_punch_rewards_status_expires_at", "punch_rewards", ["status", "expires_at"])
    op.create_index("ix_punch_rewards_issued_by", "punch_rewards", ["issued_by"])
    op.create_index("ix_punch_rewards_redeemed_by", "punch_rewards", ["redeemed_by"])


def downgrade() -> None:
    for table in ("punch_rewards", "punch_programs"):
        op.drop_table(table)
