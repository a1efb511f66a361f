"""Ledger (accounts, transactions, append-only entries, point lots and their draws) and checkout transactions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PROGRAM_ACCOUNTS = ("program:points_issued", "program:points_redeemed", "program:points_expired",
                    "program:points_adjusted")


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("asset", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=True),
        sa.Column("balance", sa.BigInteger, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("member_id", "kind", name="uq_ledger_accounts_member_kind"),
        sa.CheckConstraint("(member_id IS NULL AND balance IS NULL) OR (member_id IS NOT NULL AND balance IS NOT NULL)",
                           name="ck_ledger_accounts_balance_owner"),
        sa.CheckConstraint("balance >= 0 OR kind NOT IN ('wallet_cash', 'wallet_bonus', 'gift_card')",
                           name="ck_ledger_accounts_stored_value_not_negative"),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=True),
        sa.Column("store_id", sa.String(64), sa.ForeignKey("stores.id"), nullable=True),
        sa.Column("reverses_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"), nullable=True),
        sa.Column("reference", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_ledger_transactions_reference", "ledger_transactions", ["reference"])
    op.create_index("ix_ledger_transactions_reverses_id", "ledger_transactions", ["reverses_id"])
    op.create_table(
        "ledger_entries",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"), nullable=False),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=True),
        sa.Column("asset", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("amount <> 0", name="ck_ledger_entries_amount_not_zero"),
    )
    op.create_index("ix_ledger_entries_transaction_id", "ledger_entries", ["transaction_id"])
    op.create_index("ix_ledger_entries_account_id", "ledger_entries", ["account_id"])
    op.create_index("ix_ledger_entries_member_id_id", "ledger_entries", ["member_id", "id"])
    op.create_table(
        "point_lots",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"), nullable=False),
        sa.Column("earned_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_point_lots_amount_positive"),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name="ck_point_lots_remaining_in_range"),
    )
    op.create_index("ix_point_lots_member_id_expires_at", "point_lots", ["member_id", "expires_at"])
    op.create_index("ix_point_lots_expires_at", "point_lots", ["expires_at"])
    op.create_table(
        "point_lot_draws",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("lot_id", BIG_ID, sa.ForeignKey("point_lots.id"), nullable=False),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"), nullable=False),
        sa.Column("origin_transaction_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.CheckConstraint("amount <> 0", name="ck_point_lot_draws_amount_not_zero"),
    )
    op.create_index("ix_point_lot_draws_origin_transaction_id", "point_lot_draws", ["origin_transaction_id"])
    op.create_table(
        "checkout_transactions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("store_id", sa.String(64), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("receipt_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("voided_at", TS, nullable=True),
        sa.Column("subtotal", sa.BigInteger, nullable=False),
        sa.Column("discount", sa.BigInteger, nullable=False),
        sa.Column("net", sa.BigInteger, nullable=False),
        sa.Column("points_burned", sa.BigInteger, nullable=False),
        sa.Column("points_earned", sa.BigInteger, nullable=False),
        sa.Column("qualifying_spend", sa.BigInteger, nullable=False),
        sa.Column("points_balance_after", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("applied", sa.JSON, nullable=False),
        sa.Column("ledger_transaction_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"), nullable=True),
        sa.UniqueConstraint("store_id", "receipt_id", name="uq_checkout_transactions_store_receipt"),
        sa.CheckConstraint("status IN ('committed', 'voided', 'partially_returned', 'returned')",
                           name="ck_checkout_transactions_status"),
        sa.CheckConstraint("subtotal >= 0 AND discount >= 0 AND net >= 0 AND net = subtotal - discount",
                           name="ck_checkout_transactions_totals"),
        sa.CheckConstraint("points_burned >= 0 AND points_earned >= 0", name="ck_checkout_transactions_points"),
    )
    op.create_index("ix_checkout_transactions_member_id_occurred_at", "checkout_transactions",
                    ["member_id", "occurred_at"])
    op.create_table(
        "checkout_returns",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("checkout_transactions.id"), nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("points_clawed_back", sa.BigInteger, nullable=False),
        sa.Column("points_refunded", sa.BigInteger, nullable=False),
        sa.Column("qualifying_spend", sa.BigInteger, nullable=False),
        sa.Column("ledger_transaction_id", sa.String(32), sa.ForeignKey("ledger_transactions.id"), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_checkout_returns_transaction_id", "checkout_returns", ["transaction_id"])

    accounts = sa.table("ledger_accounts", sa.column("id", sa.String), sa.column("kind", sa.String),
                        sa.column("asset", sa.String), sa.column("created_at", TS))
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    op.bulk_insert(accounts, [{"id": a, "kind": a, "asset": "points", "created_at": now} for a in PROGRAM_ACCOUNTS])
    _append_only_entries()


def _append_only_entries() -> None:
    """Entries are never changed. PostgreSQL refuses UPDATE and DELETE (TRUNCATE, an administrator's tool, stays
    possible); SQLite refuses UPDATE (its test harness empties tables with DELETE)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'ledger entries are append-only: % refused', TG_OP;
            END;
            $$""")
        op.execute("""
            CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
            FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()""")
    else:
        op.execute("""
            CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE ON ledger_entries
            BEGIN
                SELECT RAISE(ABORT, 'ledger entries are append-only: UPDATE refused');
            END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_append_only")
    for table in ("checkout_returns", "checkout_transactions", "point_lot_draws", "point_lots", "ledger_entries",
                  "ledger_transactions", "ledger_accounts"):
        op.drop_table(table)
