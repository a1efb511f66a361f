"""The member whose personal data a kept idempotent answer holds (an enrolment's), so that erasing the member
rewrites it; indexed only where there is one. Enrolment answers kept before (at most the retention period old)
are found by their shape and named too.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("subject", sa.String(32), nullable=True))
    op.create_index("ix_idempotency_keys_subject", "idempotency_keys", ["subject"],
                    postgresql_where=sa.text("subject IS NOT NULL"), sqlite_where=sa.text("subject IS NOT NULL"))
    records = sa.table("idempotency_keys", sa.column("id", sa.Integer), sa.column("response_status", sa.Integer),
                       sa.column("response_body", sa.LargeBinary), sa.column("subject", sa.String))
    connection = op.get_bind()
    # Only bodies that name a card number are read (an enrolment's does; a sale's, the other 201s, does not).
    if connection.dialect.name == "postgresql":
        names_card = sa.text("position(convert_to('\"card_number\"', 'UTF8') IN response_body) > 0")
    else:
        names_card = sa.text("instr(response_body, CAST('\"card_number\"' AS BLOB)) > 0")
    found = connection.execute(sa.select(records.c.id, records.c.response_body)
                               .where(records.c.response_status == 201, names_card)).all()
    for record_id, body in found:
        member_id = _enrolled_member(body)
        if member_id is not None:
            connection.execute(records.update().where(records.c.id == record_id).values(subject=member_id))


def _enrolled_member(body: bytes | None) -> str | None:
    """The member's id if ``body`` is an enrolment's answer (a member: an id and a card number)."""
    try:
        answer = json.loads(body or b"")
    except ValueError:
        return None
    if isinstance(answer, dict) and str(answer.get("id", "")).startswith("mem_") and "card_number" in answer:
        return answer["id"]
    return None


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_subject", table_name="idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("subject")
