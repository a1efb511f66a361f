"""Lot draws found by their lot: a return or void reads what the sweep expired from the sale's own lots, so that
points lost to expiry are not clawed back a second time.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_point_lot_draws_lot_id", "point_lot_draws", ["lot_id"])


def downgrade() -> None:
    op.drop_index("ix_point_lot_draws_lot_id", table_name="point_lot_draws")
