"""Segment movement: each member's quadrant and lifecycle before the last sweep that segmented them, and that
sweep's ``as_of``, so the segment report can say who moved where between two sweeps.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member_activity") as batch:
        batch.add_column(sa.Column("previous_quadrant", sa.String(16), nullable=True))
        batch.add_column(sa.Column("previous_lifecycle", sa.String(16), nullable=True))
        batch.add_column(sa.Column("previous_segmented_as_of", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("member_activity") as batch:
        batch.drop_column("previous_segmented_as_of")
        batch.drop_column("previous_lifecycle")
        batch.drop_column("previous_quadrant")
