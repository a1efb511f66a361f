"""What the member's wallet held after each sale, kept with the receipt as its points balance is: reading a
receipt again answered the wallet as it is now. Sales committed before are filled in from the ledger.

Every sale locks the member's wallet accounts, so their entries are numbered in the order the sales and the
wallet's other postings committed: the wallet after a sale is the sum of its entries up to the sale's last one
(up to the sale's commit time for a sale that posted nothing).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_BACKFILL = """
UPDATE checkout_transactions SET wallet_balance_after = COALESCE((
    SELECT SUM(e.amount) FROM ledger_entries e
    WHERE e.account_id IN (SELECT a.id FROM ledger_accounts a WHERE a.member_id = checkout_transactions.member_id
                           AND a.kind IN ('wallet_cash', 'wallet_bonus'))
      AND CASE WHEN checkout_transactions.ledger_transaction_id IS NULL
               THEN e.created_at <= checkout_transactions.created_at
               ELSE e.id <= (SELECT MAX(x.id) FROM ledger_entries x
                             WHERE x.transaction_id = checkout_transactions.ledger_transaction_id) END
), 0)
"""


def upgrade() -> None:
    with op.batch_alter_table("checkout_transactions") as batch:
        batch.add_column(sa.Column("wallet_balance_after", sa.BigInteger, nullable=True))
    op.execute(_BACKFILL)
    with op.batch_alter_table("checkout_transactions") as batch:
        batch.alter_column("wallet_balance_after", existing_type=sa.BigInteger, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("checkout_transactions") as batch:
        batch.drop_column("wallet_balance_after")
