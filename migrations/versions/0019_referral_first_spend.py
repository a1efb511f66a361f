"""A referral reward keeps the program's ``min_first_spend`` its sale qualified under, so that the sale's returns
are judged against it: judged against the figure in force when they came, a threshold raised since had a 1.00
return take back a referral the sale still earned. Rewards before this revision have none and are judged as
before, against the program's current figure.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referral_rewards") as batch:
        batch.add_column(sa.Column("min_first_spend", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referral_rewards") as batch:
        batch.drop_column("min_first_spend")
