"""Gift cards (their balances are ledger accounts owned by a card) and failed attempts (the rate limiter).

``ledger_accounts`` gains a second kind of owner, ``gift_card_id``: its owner check allows a member or a gift
card (or no owner, the program's own accounts), and each card holds one account per kind.

Revision ID: 0006
Revises: 0009
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MEMBER_OWNER = "(member_id IS NULL AND balance IS NULL) OR (member_id IS NOT NULL AND balance IS NOT NULL)"
OWNER = ("(member_id IS NULL AND gift_card_id IS NULL AND balance IS NULL)"
         " OR (member_id IS NOT NULL AND gift_card_id IS NULL AND balance IS NOT NULL)"
         " OR (member_id IS NULL AND gift_card_id IS NOT NULL AND balance IS NOT NULL)")


def upgrade() -> None:
    op.create_table(
        "gift_cards",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("pin_hash", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("initial_amount", sa.BigInteger, nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("issued_by", sa.String(32), nullable=True),
        sa.CheckConstraint("initial_amount > 0", name="ck_gift_cards_initial_amount_positive"),
    )
    op.create_table(
        "failed_attempts",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_failed_attempts_scope_subject_at", "failed_attempts", ["scope", "subject", "at"])
    op.create_index("ix_failed_attempts_at", "failed_attempts", ["at"])
    with op.batch_alter_table("ledger_accounts") as batch:  # SQLite rebuilds the table (see migrations/env.py)
        batch.add_column(sa.Column("gift_card_id", sa.String(32), sa.ForeignKey("gift_cards.id",
                                   name="fk_ledger_accounts_gift_card_id"), nullable=True))
        batch.create_unique_constraint("uq_ledger_accounts_gift_card_kind", ["gift_card_id", "kind"])
        batch.drop_constraint("ck_ledger_accounts_balance_owner", type_="check")
        batch.create_check_constraint("ck_ledger_accounts_balance_owner", OWNER)


def downgrade() -> None:
    with op.batch_alter_table("ledger_accounts") as batch:
        batch.drop_constraint("ck_ledger_accounts_balance_owner", type_="check")
        batch.create_check_constraint("ck_ledger_accounts_balance_owner", MEMBER_OWNER)
        batch.drop_constraint("uq_ledger_accounts_gift_card_kind", type_="unique")
        batch.drop_constraint("fk_ledger_accounts_gift_card_id", type_="foreignkey")
        batch.drop_column("gift_card_id")
    op.drop_table("failed_attempts")
    op.drop_table("gift_cards")
