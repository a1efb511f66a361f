from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import defer_row, fetch, prefetch
from service.punchcards.models import PunchProgram, PunchReward

_REWARDS = PunchReward.__table__


async def get_program(session: AsyncSession, program_id: str) -> PunchProgram | None:
    return await session.get(PunchProgram, program_id)


async def list_programs(session: AsyncSession, *, after: str | None, limit: int) -> list[PunchProgram]:
    query = select(PunchProgram).order_by(PunchProgram.id).limit(limit)
    if after:
        query = query.where(PunchProgram.id > after)
    return list((await session.execute(query)).scalars())


async def active_programs(session: AsyncSession) -> list[PunchProgram]:
    query = select(PunchProgram).where(PunchProgram.active.is_(True)).order_by(PunchProgram.id)
    return list((await session.execute(query)).scalars())


async def programs_by_id(session: AsyncSession, ids: Sequence[str]) -> list[PunchProgram]:
    if not ids:
        return []
    query = select(PunchProgram).where(PunchProgram.id.in_(list(ids))).order_by(PunchProgram.id)
    return list((await session.execute(query)).scalars())


async def rewards_by_id(session: AsyncSession, ids: Sequence[str], *, lock: bool) -> list[PunchReward]:
    query = select(PunchReward).where(PunchReward.id.in_(list(ids))).order_by(PunchReward.id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return list((await session.execute(query)).scalars())


_MEMBER_REWARDS = (select(PunchReward).where(PunchReward.member_id == bindparam("p_member_id"))
                   .order_by(PunchReward.issued_at.desc(), PunchReward.id))


async def member_rewards(session: AsyncSession, member_id: str) -> list[PunchReward]:
    return list((await session.execute(_MEMBER_REWARDS, {"p_member_id": member_id})).scalars())


_REWARD = PunchReward.__table__.c
_USABLE_REWARDS = (select(_REWARD.id, _REWARD.program_id, _REWARD.free_skus, _REWARD.free_categories,
                          _REWARD.free_max_value)
                   .where(_REWARD.member_id == bindparam("p_member_id"), _REWARD.status == "available",
                          _REWARD.expires_at > bindparam("p_now"))
                   .order_by(_REWARD.expires_at, _REWARD.id))


async def usable_rewards(session: AsyncSession, member_id: str, now: datetime) -> list[Any]:
    """The member's rewards available and unexpired at ``now`` (id, program id and terms), soonest-expiring
    first: only those rows, whatever the member's history of used ones."""
    return list(await fetch(session, _USABLE_REWARDS, {"p_member_id": member_id, "p_now": now}))


def prefetch_usable_rewards(session: AsyncSession, member_id: str, now: datetime) -> None:
    """Announce :func:`usable_rewards`' read (``db.prefetch``)."""
    prefetch(session, _USABLE_REWARDS, {"p_member_id": member_id, "p_now": now})


async def unused_rewards(session: AsyncSession, member_id: str, program_id: str, now: datetime) -> list[PunchReward]:
    """The member's available rewards of a program not past their end at ``now``, locked, newest first. One past
    its end is expired whether or not the sweep has written so yet (``service.effective_status``): revoking it
    gave its stamps back, a live card from a dead reward, to a member who returned before the sweep ran."""
    query = (select(PunchReward)
             .where(PunchReward.member_id == member_id, PunchReward.program_id == program_id,
                    PunchReward.status == "available", PunchReward.expires_at > now)
             .order_by(PunchReward.issued_at.desc(), PunchReward.id.desc())
             .with_for_update().execution_options(populate_existing=True))
    return list((await session.execute(query)).scalars())


async def rewards_issued_by(session: AsyncSession, transaction_id: str) -> list[PunchReward]:
    query = select(PunchReward).where(PunchReward.issued_by == transaction_id).order_by(PunchReward.id)
    return list((await session.execute(query)).scalars())


async def add_rewards(session: AsyncSession, rows: Sequence[Any]) -> None:
    """Insert new rewards, given as plain objects with the table's columns as attributes; on PostgreSQL deferred
    (``db.defer_row``), all of a sale's in one INSERT with the commit's next statement."""
    for row in rows:
        await defer_row(session, _REWARDS, {c.key: getattr(row, c.key) for c in _REWARDS.columns})


async def set_status(session: AsyncSession, ids: Sequence[str], *, from_status: str, to_status: str,
                     at: datetime, redeemed_by: str | None = None) -> int:
    """Move rewards from one status to another; only rows still in ``from_status`` change (the count says how
    many did), so two writers can never both move the same reward."""
    if not ids:
        return 0
    result = await session.execute(
        update(PunchReward)
        .where(PunchReward.id.in_(list(ids)), PunchReward.status == from_status)
        .values(status=to_status, changed_at=at, redeemed_by=redeemed_by)
        .execution_options(synchronize_session=False))
    return result.rowcount


async def redeemed_by(session: AsyncSession, transaction_id: str) -> list[PunchReward]:
    query = (select(PunchReward).where(PunchReward.redeemed_by == transaction_id, PunchReward.status == "redeemed")
             .order_by(PunchReward.id).with_for_update().execution_options(populate_existing=True))
    return list((await session.execute(query)).scalars())


async def programs_redeemed_by(session: AsyncSession, transaction_id: str) -> list[str]:
    query = (select(PunchReward.program_id).where(PunchReward.redeemed_by == transaction_id,
                                                  PunchReward.status == "redeemed")
             .distinct().order_by(PunchReward.program_id))
    return list((await session.execute(query)).scalars())


async def expire(session: AsyncSession, as_of: datetime, now: datetime) -> int:
    """Available rewards past their expiry become expired, except those another transaction holds (a sale using
    them, a void taking them back), which the next sweep expires: the sweep never waits for a till."""
    due = (select(PunchReward.id).where(PunchReward.status == "available", PunchReward.expires_at <= as_of)
           .order_by(PunchReward.id).with_for_update(skip_locked=True))
    result = await session.execute(
        update(PunchReward).where(PunchReward.id.in_(due.scalar_subquery()))
        .values(status="expired", changed_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount


async def issued_by_status(session: AsyncSession, start: datetime | None, end: datetime,
                           now: datetime) -> list[Row]:
    """``(program_id, name, status, past its expiry at now, count)`` of the rewards issued in ``[start, end)`` (a
    report's read: it scans the rewards)."""
    past_end = (PunchReward.expires_at <= now).label("past_end")
    query = (select(PunchReward.program_id, PunchProgram.name, PunchReward.status, past_end, func.count())
             .join(PunchProgram, PunchProgram.id == PunchReward.program_id)
             .where(PunchReward.issued_at < end)
             .group_by(PunchReward.program_id, PunchProgram.name, PunchReward.status, past_end))
    if start is not None:
        query = query.where(PunchReward.issued_at >= start)
    return list((await session.execute(query)).all())
