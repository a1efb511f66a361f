from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import Database, fetch, insert_unless_duplicate, prefetch
from service.members.models import Member
from service.program.repository import VERSION_COLUMNS
from service.tiers.repository import REVIEW_AT_COLUMN


async def get(session: AsyncSession, member_id: str, *, lock: bool = False) -> Member | None:
    """The member; with ``lock``, read as committed now and locked for update (``FOR UPDATE`` on PostgreSQL) to
    the end of the transaction."""
    if lock:
        return await session.get(Member, member_id, with_for_update=True, populate_existing=True)
    return await session.get(Member, member_id)


async def status_shared(session: AsyncSession, member_id: str) -> str | None:
    """The member's status as committed now, read with a share lock on the row (``FOR SHARE`` on PostgreSQL;
    SQLite has one writer at a time): an erasure, which updates the row, waits for this transaction, or this
    read waits for the erasure and sees it."""
    query = select(Member.status).where(Member.id == member_id).with_for_update(read=True)
    return (await session.execute(query)).scalar_one_or_none()


_GET_WITH_VERSIONS = (select(*Member.__table__.columns, *VERSION_COLUMNS)
                      .where(Member.id == bindparam("p_member_id")))


def prefetch_with_versions(session: AsyncSession, member_id: str) -> None:
    """Announce :func:`get_with_versions`'s read (``db.prefetch``)."""
    prefetch(session, _GET_WITH_VERSIONS, {"p_member_id": member_id})


async def get_with_versions(session: AsyncSession, member_id: str) -> tuple[Any | None, tuple[int, int] | None]:
    """The member as a row (its columns by name, straight from the driver), and the program's and catalog's
    versions read in the same statement (None, None: no member)."""
    rows = await fetch(session, _GET_WITH_VERSIONS, {"p_member_id": member_id})
    return (None, None) if not rows else (rows[0], (rows[0].program_version, rows[0].catalog_version))


async def add(session: AsyncSession, member: Member) -> bool:
    """Insert; False when a unique column (card, phone, email, external ref, referral code) collides."""
    return await insert_unless_duplicate(session, member)


async def apply_changes(session: AsyncSession, member: Member, changes: dict[str, Any]) -> bool:
    """Set ``changes`` on ``member`` and flush them in a savepoint; False (and ``member`` expired, its changes
    undone) when a unique column collides. The changes must be made inside the savepoint: ``begin_nested``
    flushes what is pending before it starts, where a collision would break the whole transaction."""
    try:
        async with session.begin_nested():
            for field, value in changes.items():
                setattr(member, field, value)
    except IntegrityError:
        return False
    return True


# The till's look-ups, built once: by card number, phone or normalized email, as plain rows (the look-up endpoint
# and the checkout read the member's columns; neither writes the member through them).
_LOOKUP_COLUMNS = ("card_number", "phone", "email_normalized")


def _active_by(column: str, *extra: Any):
    return (select(*Member.__table__.columns, *VERSION_COLUMNS, *extra)
            .where(Member.status == "active", getattr(Member, column) == bindparam("p_value"))
            .order_by(Member.id).limit(2))


_FIND_ACTIVE_ROWS = {column: _active_by(column) for column in _LOOKUP_COLUMNS}
# The look-up endpoint's: the same, with the member's next tier review (``tier_review_at``: a review fallen due
# changes the tier it answers; the checkout's own reads replay reviews in the tiers domain).
_LOOKUP_ROWS = {column: _active_by(column, REVIEW_AT_COLUMN) for column in _LOOKUP_COLUMNS}


def prefetch_active_rows(session: AsyncSession, **where: str) -> None:
    """Announce :func:`find_active_rows`'s read (``db.prefetch``)."""
    ((column, value),) = where.items()
    prefetch(session, _FIND_ACTIVE_ROWS[column], {"p_value": value})


async def find_active_rows(session: AsyncSession, *, with_review: bool = False,
                           **where: str) -> tuple[list[Any], tuple[int, int] | None]:
    """Active members whose column equals the given value (an exact look-up; at most one each) as rows (the
    member's columns by name, straight from the driver: about a third of a look-up's CPU was SQLAlchemy's ORM
    execution), and the program's and catalog's versions read in the same statement (None when none matched).
    ``with_review``: each row with ``tier_review_at`` too (the look-up endpoint's)."""
    ((column, value),) = where.items()
    rows = await fetch(session, (_LOOKUP_ROWS if with_review else _FIND_ACTIVE_ROWS)[column], {"p_value": value})
    return rows, ((rows[0].program_version, rows[0].catalog_version) if rows else None)


async def find_active_rows_alone(db: Database, **where: str) -> list[Any]:
    """:func:`find_active_rows` with ``with_review``, read on a pooled connection outside any session
    (``Database.fetch_alone``): the look-up's fast path. Each row carries the versions."""
    ((column, value),) = where.items()
    return await db.fetch_alone(_LOOKUP_ROWS[column], {"p_value": value})


async def conflicting(session: AsyncSession, member: Member) -> list[str]:
    """Which unique fields of ``member`` another member already holds."""
    checks = {
        "phone": Member.phone == member.phone if member.phone else None,
        "email": Member.email_normalized == member.email_normalized if member.email_normalized else None,
        "external_ref": Member.external_ref == member.external_ref if member.external_ref else None,
    }
    clauses = [c for c in checks.values() if c is not None]
    if not clauses:
        return []
    rows = (await session.execute(select(Member).where(Member.id != member.id, or_(*clauses)))).scalars()
    found = []
    for other in rows:
        if member.phone and other.phone == member.phone:
            found.append("phone")
        if member.email_normalized and other.email_normalized == member.email_normalized:
            found.append("email")
        if member.external_ref and other.external_ref == member.external_ref:
            found.append("external_ref")
    return sorted(set(found))


async def by_referral_code(session: AsyncSession, code: str) -> Member | None:
    return (await session.execute(select(Member).where(Member.referral_code == code))).scalar_one_or_none()
