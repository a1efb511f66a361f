"""The catalog version: a counter every change to stores, punch card programs or voucher campaigns raises, so
that each process can keep them in memory and know with the one small read it already makes per request (the
program's version) whether its copy is current.

Revision ID: 0011
Revises: 0008
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("program") as batch:
        batch.add_column(sa.Column("catalog_version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("program") as batch:
        batch.drop_column("catalog_version")
