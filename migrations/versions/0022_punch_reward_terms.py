"""A punch-card reward keeps what it makes free as its programme said when it was issued: the reward items (the
qualifying items when the programme names none) and the cap. Redeemed on the programme as it stands, a cap
lowered from 6.00 to 2.00 took 2.00 off a coffee a reward earned under 6.00 made free, and a reward moved from
coffee to bakery refused the coffee it was earned for.

Rewards issued before this revision take their programme's terms as they stand: what they were redeemed on until
now.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_NAMES_NONE = "json_array_length(p.reward_skus) + json_array_length(p.reward_categories) = 0"
_BACKFILL = f"""
UPDATE punch_rewards SET
    free_skus = (SELECT CASE WHEN {_NAMES_NONE} THEN p.qualifying_skus ELSE p.reward_skus END
                 FROM punch_programs p WHERE p.id = punch_rewards.program_id),
    free_categories = (SELECT CASE WHEN {_NAMES_NONE} THEN p.qualifying_categories ELSE p.reward_categories END
                       FROM punch_programs p WHERE p.id = punch_rewards.program_id),
    free_max_value = (SELECT p.reward_max_value FROM punch_programs p WHERE p.id = punch_rewards.program_id)
"""


def upgrade() -> None:
    with op.batch_alter_table("punch_rewards") as batch:
        batch.add_column(sa.Column("free_skus", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("free_categories", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("free_max_value", sa.BigInteger(), nullable=True))
    op.execute(_BACKFILL)
    with op.batch_alter_table("punch_rewards") as batch:
        batch.alter_column("free_skus", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("free_categories", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("punch_rewards") as batch:
        batch.drop_column("free_max_value")
        batch.drop_column("free_categories")
        batch.drop_column("free_skus")
