"""A punch-card reward keeps the stamps it cost when it was issued, so that revoking it gives back those: revoking
gave back the programme's current ``stamps_required``, and a programme edited since gave back stamps nobody earned
(raised) or left a deficit after a sale undone whole (lowered).

Rewards issued before this revision are filled in from the ledger: the ``reward`` entries their sale posted on the
member's stamps account, shared among the rewards of that programme the sale issued (each took the same number).
A reward the ledger cannot account for takes its programme's current ``stamps_required``.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_BACKFILL = """
UPDATE punch_rewards SET stamps_cost = COALESCE((
    SELECT -SUM(e.amount) / (SELECT COUNT(*) FROM punch_rewards same
                             WHERE same.issued_by = punch_rewards.issued_by
                               AND same.program_id = punch_rewards.program_id)
    FROM checkout_transactions t
    JOIN ledger_entries e ON e.transaction_id = t.ledger_transaction_id
    JOIN ledger_accounts a ON a.id = e.account_id
    WHERE t.id = punch_rewards.issued_by AND e.kind = 'reward' AND a.member_id = punch_rewards.member_id
      AND a.kind = 'stamps:' || punch_rewards.program_id
), (SELECT p.stamps_required FROM punch_programs p WHERE p.id = punch_rewards.program_id))
"""


def upgrade() -> None:
    with op.batch_alter_table("punch_rewards") as batch:
        batch.add_column(sa.Column("stamps_cost", sa.Integer(), nullable=True))
    op.execute(_BACKFILL)
    with op.batch_alter_table("punch_rewards") as batch:
        batch.alter_column("stamps_cost", existing_type=sa.Integer(), nullable=False)
        batch.create_check_constraint("ck_punch_rewards_stamps_cost", "stamps_cost >= 1")


def downgrade() -> None:
    with op.batch_alter_table("punch_rewards") as batch:
        batch.drop_constraint("ck_punch_rewards_stamps_cost", type_="check")
        batch.drop_column("stamps_cost")
