"""A commit's cost bounded whatever the member's history: open point lots indexed apart, tier spend per day.

A debit draws from a member's open lots in expiry order; the partial index holds only lots with points left,
so a member's history of exhausted lots is never read. A clawback finds the lots its transaction earned by
``transaction_id``. ``tier_spend_days`` sums the qualifying spend per member and UTC day, so the window's spend
is at most a window's worth of day rows plus one partial day (filled here from ``tier_spend``).

Revision ID: 0010
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN = sa.text("remaining > 0")


def upgrade() -> None:
    op.drop_index("ix_point_lots_member_id_expires_at", table_name="point_lots")
    op.create_index("ix_point_lots_open", "point_lots", ["member_id", "expires_at", "id"],
                    postgresql_where=OPEN, sqlite_where=OPEN)
    op.create_index("ix_point_lots_transaction_id", "point_lots", ["transaction_id"])
    op.create_table(
        "tier_spend_days",
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
    )
    day = "date(occurred_at)" if op.get_bind().dialect.name == "sqlite" else "(occurred_at AT TIME ZONE 'UTC')::date"
    op.execute(f"INSERT INTO tier_spend_days (member_id, day, amount) SELECT member_id, {day}, sum(amount) "
               f"FROM tier_spend GROUP BY member_id, {day}")


def downgrade() -> None:
    op.drop_table("tier_spend_days")
    op.drop_index("ix_point_lots_transaction_id", table_name="point_lots")
    op.drop_index("ix_point_lots_open", table_name="point_lots")
    op.create_index("ix_point_lots_member_id_expires_at", "point_lots", ["member_id", "expires_at"])
