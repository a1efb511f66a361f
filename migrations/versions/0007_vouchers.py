"""Vouchers: campaigns and codes; the database-backed rate-limit counters (failed code look-ups).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "voucher_campaigns",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=True),
        sa.Column("min_spend", sa.BigInteger, nullable=False),
        sa.Column("skus", sa.JSON, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("valid_from", TS, nullable=True),
        sa.Column("valid_until", TS, nullable=True),
        sa.Column("valid_days", sa.Integer, nullable=True),
        sa.Column("per_member_limit", sa.Integer, nullable=True),
        sa.Column("total_limit", sa.BigInteger, nullable=True),
        sa.Column("stackable", sa.Boolean, nullable=False),
        sa.Column("audience", sa.JSON, nullable=True),
        sa.Column("auto_issue_spend_threshold", sa.BigInteger, nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("issued_count", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('amount_off', 'percent_off', 'free_item')", name="ck_voucher_campaigns_kind"),
        sa.CheckConstraint("issued_count >= 0 AND (total_limit IS NULL OR issued_count <= total_limit)",
                           name="ck_voucher_campaigns_issued_count"),
    )
    op.create_index("ix_voucher_campaigns_auto_issue", "voucher_campaigns", ["auto_issue_spend_threshold"])
    op.create_table(
        "vouchers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("campaign_id", sa.String(32), sa.ForeignKey("voucher_campaigns.id"), nullable=False),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("valid_from", TS, nullable=True),
        sa.Column("valid_until", TS, nullable=True),
        sa.Column("issued_by", sa.String(32), nullable=True),
        sa.Column("redeemed_by", sa.String(32), nullable=True),
        sa.Column("redeemed_at", TS, nullable=True),
        sa.Column("changed_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('active', 'redeemed', 'expired', 'void')", name="ck_vouchers_status"),
    )
    op.create_index("ux_vouchers_code", "vouchers", ["code"], unique=True)
    op.create_index("ix_vouchers_member_id_campaign_id", "vouchers", ["member_id", "campaign_id"])
    op.create_index("ix_vouchers_campaign_id", "vouchers", ["campaign_id"])
    op.create_index("ix_vouchers_issued_by", "vouchers", ["issued_by"])
    op.create_index("ix_vouchers_redeemed_by", "vouchers", ["redeemed_by"])
    op.create_index("ix_vouchers_status_valid_until", "vouchers", ["status", "valid_until"])


def downgrade() -> None:
    for table in ("vouchers", "voucher_campaigns"):
        op.drop_table(table)
