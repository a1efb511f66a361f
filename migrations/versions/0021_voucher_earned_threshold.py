"""A threshold voucher keeps the ``spend_threshold`` its sale reached, so that the sale's returns are judged against
it: judged against the campaign's figure at the return, a threshold raised since had a 1.00 return take back a
voucher the sale still earned (and one lowered left a voucher the sale no longer earned), as migration 0019 fixed
for referrals.

Vouchers issued by a sale before this revision take their campaign's current threshold: what their returns were
judged against until now.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_BACKFILL = """
UPDATE vouchers SET earned_threshold = (
    SELECT c.auto_issue_spend_threshold FROM voucher_campaigns c WHERE c.id = vouchers.campaign_id)
WHERE issued_by IS NOT NULL
"""


def upgrade() -> None:
    with op.batch_alter_table("vouchers") as batch:
        batch.add_column(sa.Column("earned_threshold", sa.BigInteger(), nullable=True))
    op.execute(_BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("vouchers") as batch:
        batch.drop_column("earned_threshold")
