"""Foundation: stores, program, API keys, idempotency keys, audit log, members.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stores",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "program",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("store_id", sa.String(64), sa.ForeignKey("stores.id"), nullable=True),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("response_body", sa.LargeBinary, nullable=True),
        sa.Column("response_type", sa.String(64), nullable=True),
        sa.Column("locked_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ux_idempotency_keys_scope", "idempotency_keys", ["api_key_id", "key"], unique=True)
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(40), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON, nullable=True),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("card_number", sa.String(19), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("phone", sa.String(20), nullable=True, unique=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("email_normalized", sa.String(254), nullable=True, unique=True),
        sa.Column("birthday", sa.Date, nullable=True),
        sa.Column("locale", sa.String(35), nullable=True),
        sa.Column("marketing_consent", sa.Boolean, nullable=True),
        sa.Column("external_ref", sa.String(100), nullable=True, unique=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("tier_code", sa.String(32), nullable=True),
        sa.Column("referral_code", sa.String(16), nullable=False, unique=True),
        sa.Column("referred_by", sa.String(32), sa.ForeignKey("members.id"), nullable=True),
        sa.Column("enrolled_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("erased_at", TS, nullable=True),
    )


def downgrade() -> None:
    for table in ("members", "audit_log", "idempotency_keys", "api_keys", "program", "stores"):
        op.drop_table(table)
