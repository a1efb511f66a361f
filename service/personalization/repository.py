from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import Row, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout.models import CheckoutTransaction
from service.db import UTCDateTime, defer, dialect_insert, dialect_of, fetch, prebuilt, prefetch
from service.members.models import Member
from service.personalization.models import MemberActivity, MemberDay, SegmentThresholds


async def get_activity(session: AsyncSession, member_id: str) -> MemberActivity | None:
    return await session.get(MemberActivity, member_id)


_ACTIVITY = MemberActivity.__table__.c
_ACTIVITY_ROW = prebuilt(lambda _: select(*_ACTIVITY).where(_ACTIVITY.member_id == bindparam("p_member_id")))


async def activity_row(session: AsyncSession, member_id: str) -> Row | None:
    """The member's running figures as a plain row, read through ``db.fetch`` (the checkout reads them on every
    quote and commit and changes them with an upsert, never through this row)."""
    rows = await fetch(session, _ACTIVITY_ROW(session), {"p_member_id": member_id})
    return rows[0] if rows else None


def prefetch_activity_row(session: AsyncSession, member_id: str) -> None:
    """Announce :func:`activity_row`'s read (``db.prefetch``)."""
    prefetch(session, _ACTIVITY_ROW(session), {"p_member_id": member_id})


def _add_to_day_statement(insert):
    stmt = insert(MemberDay.__table__)
    return stmt.on_conflict_do_update(index_elements=["member_id", "day"],
                                      set_={"transactions": MemberDay.transactions + stmt.excluded.transactions,
                                            "spend": MemberDay.spend + stmt.excluded.spend})


def _count_sale(insert, *, birthday: bool, with_day: bool = False):
    """The activity upsert; ``with_day`` (PostgreSQL only) carries the day's upsert as a data-modifying CTE, with
    its values as ``p_member_id``, ``p_day``, ``p_transactions``, ``p_spend``: one statement, both or neither."""
    table = MemberActivity.__table__
    stmt = insert(table)
    new = stmt.excluded
    changes = {
        "purchases": table.c.purchases + 1,
        "first_purchase_at": case((or_(table.c.first_purchase_at.is_(None),
                                       new.first_purchase_at < table.c.first_purchase_at), new.first_purchase_at),
                                  else_=table.c.first_purchase_at),
        "last_purchase_at": case((or_(table.c.last_purchase_at.is_(None),
                                      new.last_purchase_at > table.c.last_purchase_at), new.last_purchase_at),
                                 else_=table.c.last_purchase_at),
        "updated_at": new.updated_at,
    }
    if birthday:
        changes |= {"birthday_bonus_year": new.birthday_bonus_year,
                    "birthday_bonus_transaction_id": new.birthday_bonus_transaction_id}
    upsert = stmt.on_conflict_do_update(index_elements=["member_id"], set_=changes)
    if not with_day:
        return upsert
    day = _add_to_day_statement(insert).values(
        member_id=bindparam("p_member_id"), day=bindparam("p_day"), transactions=bindparam("p_transactions"),
        spend=bindparam("p_spend"))
    return upsert.add_cte(day.cte("day"))


_COUNT_SALE = prebuilt(lambda insert: _count_sale(insert, birthday=False))
_COUNT_SALE_WITH_BIRTHDAY = prebuilt(lambda insert: _count_sale(insert, birthday=True))
_COUNT_SALE_ON_DAY = prebuilt(lambda insert: _count_sale(insert, birthday=False, with_day=True))
_COUNT_SALE_ON_DAY_WITH_BIRTHDAY = prebuilt(lambda insert: _count_sale(insert, birthday=True, with_day=True))


async def count_sale(session: AsyncSession, member_id: str, occurred_at: datetime, now: datetime, *,
                     birthday_year: int | None, transaction_id: str, net: int) -> None:
    """The sale on its UTC day (transactions + 1, spend + ``net``) and in the running figures (purchases + 1,
    first and last purchase widened to ``occurred_at``): upserts, atomic, so a sweep creating the activity row
    meanwhile cannot make them fail. One statement on PostgreSQL (the day's upsert as a CTE), deferred to go out
    with the session's next statement; two on SQLite."""
    values = {
        "member_id": member_id, "purchases": 1, "first_purchase_at": occurred_at, "last_purchase_at": occurred_at,
        "birthday_bonus_year": birthday_year,
        "birthday_bonus_transaction_id": transaction_id if birthday_year else None, "updated_at": now}
    birthday = birthday_year is not None
    if dialect_of(session) == "postgresql":
        statement = _COUNT_SALE_ON_DAY_WITH_BIRTHDAY if birthday else _COUNT_SALE_ON_DAY
        values |= {"p_member_id": member_id, "p_day": occurred_at.date(), "p_transactions": 1, "p_spend": net}
    else:
        await add_to_day(session, member_id, occurred_at.date(), 1, net)
        statement = _COUNT_SALE_WITH_BIRTHDAY if birthday else _COUNT_SALE
    await defer(session, statement(session), values)


_ADD_TO_DAY = prebuilt(_add_to_day_statement)


async def add_to_day(session: AsyncSession, member_id: str, day: date, transactions: int, spend: int) -> None:
    """One upsert: the day's row is created or has the amounts added (atomically, without reading it)."""
    await session.execute(_ADD_TO_DAY(session),
                          {"member_id": member_id, "day": day, "transactions": transactions, "spend": spend})


async def window(session: AsyncSession, member_id: str, start: date, end: date) -> tuple[int, int]:
    """``(sales, spend)`` over the member's days in ``[start, end]``: an indexed range over those days only."""
    row = (await session.execute(
        select(func.coalesce(func.sum(MemberDay.transactions), 0), func.coalesce(func.sum(MemberDay.spend), 0))
        .where(MemberDay.member_id == member_id, MemberDay.day >= start, MemberDay.day <= end))).one()
    return int(row[0]), int(row[1])


async def purchase_bounds(session: AsyncSession, member_id: str, *, excluding: str) -> tuple[datetime | None,
                                                                                           datetime | None]:
    """The first and last ``occurred_at`` of the member's sales that still count (after a void)."""
    counted = (CheckoutTransaction.member_id == member_id, CheckoutTransaction.status != "voided",
               CheckoutTransaction.id != excluding)
    first = await session.scalar(select(CheckoutTransaction.occurred_at).where(*counted)
                                 .order_by(CheckoutTransaction.occurred_at).limit(1))
    last = await session.scalar(select(CheckoutTransaction.occurred_at).where(*counted)
                                .order_by(CheckoutTransaction.occurred_at.desc()).limit(1))
    return first, last


async def get_thresholds(session: AsyncSession) -> SegmentThresholds | None:
    return await session.get(SegmentThresholds, 1)


async def save_thresholds(session: AsyncSession, values: dict) -> None:
    stmt = dialect_insert(session)(SegmentThresholds).values(id=1, **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))


async def window_figures(session: AsyncSession, start: date, end: date) -> list[tuple[int, int]]:
    """``(sales, spend)`` of every member who bought in ``[start, end]`` (for the sweep's medians)."""
    rows = await session.execute(
        select(func.sum(MemberDay.transactions), func.sum(MemberDay.spend))
        .where(MemberDay.day >= start, MemberDay.day <= end).group_by(MemberDay.member_id)
        .having(func.sum(MemberDay.transactions) > 0))
    return [(int(f), int(m)) for f, m in rows]


async def members_after(session: AsyncSession, after: str, limit: int) -> list[tuple[str, datetime]]:
    rows = await session.execute(select(Member.id, Member.enrolled_at).where(
        Member.id > after, Member.status == "active").order_by(Member.id).limit(limit))
    return [(member_id, enrolled_at) for member_id, enrolled_at in rows]


async def day_figures(session: AsyncSession, member_ids: Sequence[str], start: date,
                      end: date) -> dict[str, tuple[int, date | None, date | None, int, int]]:
    """Per member, up to ``end``: ``(sales, first day, last day, sales in the window, spend in the window)``."""
    in_window = MemberDay.day >= start
    rows = await session.execute(
        select(MemberDay.member_id, func.sum(MemberDay.transactions),
               func.min(case((MemberDay.transactions > 0, MemberDay.day))),
               func.max(case((MemberDay.transactions > 0, MemberDay.day))),
               func.sum(case((in_window, MemberDay.transactions), else_=0)),
               func.sum(case((in_window, MemberDay.spend), else_=0)))
        .where(MemberDay.member_id.in_(list(member_ids)), MemberDay.day <= end).group_by(MemberDay.member_id))
    return {m: (int(n or 0), _day(first), _day(last), int(f or 0), int(s or 0)) for m, n, first, last, f, s in rows}


def _day(value) -> date | None:
    """SQLite returns dates from aggregates as text."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


async def save_segments(session: AsyncSession, rows: Sequence[dict]) -> None:
    """Create the members' activity rows where missing, then set their segments (two statements a batch).

    A sweep of another ``as_of`` than the member's last keeps that last segment as the previous one (the
    report's movement); the same sweep run again, or resumed, leaves the previous one as it was. SET reads the
    row as it was before the update, on both engines."""
    if not rows:
        return
    await session.execute(dialect_insert(session)(MemberActivity).values([
        {"member_id": r["member_id"], "purchases": 0, "updated_at": r["updated_at"]} for r in rows])
        .on_conflict_do_nothing())
    table = MemberActivity.__table__
    as_of = bindparam("m_as_of", type_=UTCDateTime())
    new_sweep = table.c.segmented_as_of.is_(None) | (table.c.segmented_as_of != as_of)

    def shifted(previous, current):
        return case((new_sweep, current), else_=previous)

    await session.execute(
        update(table).where(table.c.member_id == bindparam("m_id"))
        .values(previous_quadrant=shifted(table.c.previous_quadrant, table.c.quadrant),
                previous_lifecycle=shifted(table.c.previous_lifecycle, table.c.lifecycle),
                previous_segmented_as_of=shifted(table.c.previous_segmented_as_of, table.c.segmented_as_of),
                quadrant=bindparam("m_quadrant"), lifecycle=bindparam("m_lifecycle"), segmented_as_of=as_of),
        [{"m_id": r["member_id"], "m_quadrant": r["quadrant"], "m_lifecycle": r["lifecycle"],
          "m_as_of": r["as_of"]} for r in rows])


async def segment_counts(session: AsyncSession) -> tuple[dict[str, int], dict[str, int], int, int]:
    """Counts per quadrant and per lifecycle of active members as the last sweep left them, how many were
    segmented and how many are not yet."""
    active = select(Member.id).where(Member.status == "active")
    quadrants = dict((await session.execute(
        select(MemberActivity.quadrant, func.count()).where(MemberActivity.member_id.in_(active),
                                                            MemberActivity.quadrant.is_not(None))
        .group_by(MemberActivity.quadrant))).all())
    lifecycles = dict((await session.execute(
        select(MemberActivity.lifecycle, func.count()).where(MemberActivity.member_id.in_(active),
                                                             MemberActivity.lifecycle.is_not(None))
        .group_by(MemberActivity.lifecycle))).all())
    total = int(await session.scalar(select(func.count()).select_from(Member).where(Member.status == "active")) or 0)
    segmented = sum(quadrants.values())
    return quadrants, lifecycles, segmented, total - segmented


async def segment_moves(session: AsyncSession, as_of: datetime) -> tuple[list[Row], list[Row], datetime | None]:
    """Between the sweep of ``as_of`` and each member's sweep before it: ``(from, to, members)`` per quadrant
    and per lifecycle, over the active members that sweep segmented and whose segment changed (``from`` None:
    segmented for the first time), and the latest earlier sweep's ``as_of``."""
    segmented = (MemberActivity.segmented_as_of == as_of,
                 MemberActivity.member_id.in_(select(Member.id).where(Member.status == "active")))

    async def moves(previous, current) -> list[Row]:
        changed = or_(previous.is_(None), previous != current)
        return list((await session.execute(
            select(previous, current, func.count()).where(*segmented, changed)
            .group_by(previous, current))).all())

    quadrants = await moves(MemberActivity.previous_quadrant, MemberActivity.quadrant)
    lifecycles = await moves(MemberActivity.previous_lifecycle, MemberActivity.lifecycle)
    since = await session.scalar(select(func.max(MemberActivity.previous_segmented_as_of)).where(*segmented))
    return quadrants, lifecycles, since
