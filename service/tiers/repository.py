from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import utc
from service.db import dialect_insert as _dialect_insert
from service.db import insert_ignoring_duplicates
from service.members.models import Member
from service.tiers.models import TierHistory, TierSpend, TierSpendDay, TierState


async def add_spend(session: AsyncSession, row: TierSpend) -> None:
    session.add(row)
    await session.flush()
    await _add_to_day(session, row.member_id, row.occurred_at, row.amount)


async def _add_to_day(session: AsyncSession, member_id: str, at: datetime, amount: int) -> None:
    table = TierSpendDay.__table__
    insert = _dialect_insert(session)(table).values(member_id=member_id, day=utc(at).date(), amount=amount)
    await session.execute(insert.on_conflict_do_update(
        index_elements=[table.c.member_id, table.c.day], set_={"amount": table.c.amount + insert.excluded.amount}))


async def reduce_spend(session: AsyncSession, transaction_id: str, amount: int) -> None:
    row = await session.get(TierSpend, transaction_id, with_for_update=True)
    if row is not None and amount:
        row.amount -= amount
        await session.flush()
        await _add_to_day(session, row.member_id, row.occurred_at, -amount)


async def clear_spend(session: AsyncSession, transaction_id: str) -> None:
    row = await session.get(TierSpend, transaction_id, with_for_update=True)
    if row is not None and row.amount:
        await reduce_spend(session, transaction_id, row.amount)


async def spend_since(session: AsyncSession, member_id: str, start: datetime) -> int:
    """The spend from ``start`` on: whole UTC days after ``start``'s day from the day sums, plus the rows of
    ``start``'s own day from ``start`` on. Both reads are bounded by the window, never by the history."""
    next_day = utc(start).date() + timedelta(days=1)
    days = select(func.coalesce(func.sum(TierSpendDay.amount), 0)).where(
        TierSpendDay.member_id == member_id, TierSpendDay.day >= next_day).scalar_subquery()
    edge = select(func.coalesce(func.sum(TierSpend.amount), 0)).where(
        TierSpend.member_id == member_id, TierSpend.occurred_at >= start,
        TierSpend.occurred_at < datetime.combine(next_day, time(), tzinfo=UTC)).scalar_subquery()
    return int(await session.scalar(select(days + edge)) or 0)


async def spend_events(session: AsyncSession, member_id: str, start: datetime,
                       end: datetime) -> list[tuple[datetime, int]]:
    rows = await session.execute(select(TierSpend.occurred_at, TierSpend.amount).where(
        TierSpend.member_id == member_id, TierSpend.occurred_at >= start, TierSpend.occurred_at < end,
        TierSpend.amount != 0))
    return [(at, amount) for at, amount in rows]


async def get_state(session: AsyncSession, member_id: str) -> TierState | None:
    return await session.get(TierState, member_id)


async def lock_state(session: AsyncSession, member_id: str, now: datetime) -> tuple[TierState, str]:
    """The member's tier state, created if absent and locked until the transaction ends, with the member's tier
    code read under that lock (one statement once the state exists)."""
    query = (select(TierState, Member.tier_code).join(Member, Member.id == TierState.member_id)
             .where(TierState.member_id == member_id)
             .with_for_update(of=TierState).execution_options(populate_existing=True))
    found = (await session.execute(query)).first()
    if found is None:
        await session.execute(insert_ignoring_duplicates(session, TierState.__table__)
                              .values(member_id=member_id, updated_at=now))
        found = (await session.execute(query)).one()
    return found[0], found[1]


async def add_history(session: AsyncSession, rows: Sequence[TierHistory]) -> None:
    session.add_all(rows)
    await session.flush()


async def history(session: AsyncSession, member_id: str) -> list[TierHistory]:
    rows = await session.scalars(select(TierHistory).where(TierHistory.member_id == member_id)
                                 .order_by(TierHistory.id))
    return list(rows)


async def change_of_transaction(session: AsyncSession, transaction_id: str) -> TierHistory | None:
    return await session.scalar(select(TierHistory).where(TierHistory.transaction_id == transaction_id)
                                .order_by(TierHistory.id).limit(1))


async def due_members(session: AsyncSession, as_of: datetime, *, after: str, limit: int) -> list[str]:
    rows = await session.scalars(select(TierState.member_id).where(
        TierState.review_at <= as_of, TierState.member_id > after).order_by(TierState.member_id).limit(limit))
    return list(rows)


async def last_change(session: AsyncSession, member_id: str) -> TierHistory | None:
    return await session.scalar(select(TierHistory).where(TierHistory.member_id == member_id)
                                .order_by(TierHistory.id.desc()).limit(1))
