"""The enrolment answers kept for replays of members erased before 0013, rewritten to the member as erased. An
erasure before 0013 left the kept answer whole (name, phone, email, birthday, external_ref); 0013 named its member
(``subject``) but did not rewrite it, and erasing the member again changed nothing, so the personal data stayed in
``idempotency_keys`` until the purge. Since 0013 an erasure rewrites it in its own transaction
(``idempotency.scrub``), and so does an erasure asked again (``members.service.erase``).

The rewrite is ``idempotency.scrub``'s (a kept answer whose subject is the member takes the erased member's
answer), written here on this revision's columns rather than imported, as no migration imports the service: the
service's version is async, and its answer is built from the ORM models of the current head and the program, none
of which is fixed at this revision. The erased answer is the kept one with what an erasure clears cleared, as
``members.service.erase`` answers it: the personal fields null, the locale the default, ``status`` erased, a
completeness of 0, the tier the member's. Answers already rewritten (``status`` erased) are left as they are.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# What an erasure leaves of a member's answer (members.service.erase, then to_public): DEFAULT_LOCALE for the locale.
_ERASED = {"name": None, "phone": None, "email": None, "birthday": None, "locale": "en", "marketing_consent": None,
           "external_ref": None, "status": "erased", "profile_completeness": 0}


def upgrade() -> None:
    records = sa.table("idempotency_keys", sa.column("id", sa.Integer), sa.column("subject", sa.String),
                       sa.column("response_body", sa.LargeBinary))
    members = sa.table("members", sa.column("id", sa.String), sa.column("status", sa.String),
                       sa.column("tier_code", sa.String))
    connection = op.get_bind()
    kept = connection.execute(
        sa.select(records.c.id, records.c.response_body, members.c.tier_code)
        .join(members, members.c.id == records.c.subject)
        .where(members.c.status == "erased")).all()
    for record_id, body, tier_code in kept:
        erased = _erased(body, tier_code)
        if erased is not None:
            connection.execute(records.update().where(records.c.id == record_id).values(response_body=erased))


def _erased(body: bytes | None, tier_code: str | None) -> bytes | None:
    """The erased member's answer in place of ``body``, a member's answer kept whole; None if it is not one (or
    was rewritten already)."""
    try:
        answer = json.loads(body or b"")
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("status") == "erased" or "card_number" not in answer:
        return None
    answer.update(_ERASED)
    if tier_code:
        answer["tier"] = tier_code
    return json.dumps(answer, separators=(",", ":")).encode()


def downgrade() -> None:
    """Nothing to undo: the personal data an erasure removed is not put back."""
