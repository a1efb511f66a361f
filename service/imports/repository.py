from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout.models import CheckoutTransaction
from service.db import dialect_of, fetch
from service.members import rules as member_rules
from service.members.models import Member

_MEMBERS = Member.__table__
_RECEIPTS = CheckoutTransaction.__table__
_CHUNK = 1000

_BY_EXTERNAL_REF = select(_MEMBERS.c.id, _MEMBERS.c.status).where(or_(
    _MEMBERS.c.external_ref == bindparam("p_ref"), _MEMBERS.c.erased_ref == bindparam("p_erased_ref")))


async def member_by_external_ref(session: AsyncSession, external_ref: str) -> Any | None:
    """The member's ``id`` and ``status`` (a row), or None: the active member with this ``external_ref``, else an
    erased member who had it (``status`` erased)."""
    rows = await fetch(session, _BY_EXTERNAL_REF, {"p_ref": external_ref,
                                                   "p_erased_ref": member_rules.erased_ref(external_ref)})
    return min(rows, key=lambda row: row.status != "active") if rows else None


async def committed_receipts(session: AsyncSession, member_id: str,
                             receipts: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``receipts`` (store id, receipt id) the member already has, asked in chunks (the drivers bound
    the parameters of one statement)."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(receipts), _CHUNK):
        query = (select(_RECEIPTS.c.store_id, _RECEIPTS.c.receipt_id)
                 .where(_RECEIPTS.c.member_id == member_id,
                        tuple_(_RECEIPTS.c.store_id, _RECEIPTS.c.receipt_id).in_(list(receipts[start:start + _CHUNK]))))
        found.update((store, receipt) for store, receipt in (await session.execute(query)).all())
    return found


async def refresh_statistics(session: AsyncSession) -> None:
    """``ANALYZE`` on PostgreSQL (nothing elsewhere): the planner learns how large the tables have grown, and the
    statements each connection has prepared are planned again. A plan made while a table was nearly empty scans
    it whole (an account lock, a posting), and keeps doing so as it grows, until something invalidates it."""
    if dialect_of(session) == "postgresql":
        await session.execute(text("ANALYZE"))
