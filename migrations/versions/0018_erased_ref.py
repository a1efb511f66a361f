"""An erased member keeps a digest of their ``external_ref`` (``members.rules.erased_ref``), so that an import run
again refuses the line instead of enrolling the person anew from the CRM's file: an erasure clears
``external_ref``, and the import, finding no member by it, enrolled them again with every field the line held.
Members erased before this revision have no digest (their reference is gone) and are not recognized.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("erased_ref", sa.String(64), nullable=True))
    op.create_index("ix_members_erased_ref", "members", ["erased_ref"])


def downgrade() -> None:
    op.drop_index("ix_members_erased_ref", table_name="members")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("erased_ref")
