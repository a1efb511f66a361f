"""A return slip's number, unique per sale: a till that lost both a return's answer and its idempotency key, and
sends the return again with a new key, is told the slip was already taken instead of returning the goods twice.
Optional: returns without a number (every earlier one) are not compared.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkout_returns") as batch:
        batch.add_column(sa.Column("receipt_id", sa.String(64), nullable=True))
    op.create_index("uq_checkout_returns_transaction_receipt", "checkout_returns", ["transaction_id", "receipt_id"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("uq_checkout_returns_transaction_receipt", table_name="checkout_returns")
    with op.batch_alter_table("checkout_returns") as batch:
        batch.drop_column("receipt_id")
