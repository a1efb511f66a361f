from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import utc
from service.db import defer, dialect_of, fetch, prebuilt, prefetch
from service.members.models import Member
from service.tiers.models import TierHistory, TierSpend, TierSpendDay, TierState


def _add_to_day_statement(insert):
    stmt = insert(TierSpendDay.__table__)
    return stmt.on_conflict_do_update(index_elements=["member_id", "day"],
                                      set_={"amount": TierSpendDay.amount + stmt.excluded.amount})


def _add_spend_statement(insert):
    """PostgreSQL: the spend row and its day's sum in one statement (the row's INSERT as a data-modifying CTE;
    both succeed or fail together). SQLite has no DML in a CTE: the row's INSERT alone, the day's upsert next."""
    spend = insert(TierSpend.__table__)
    if insert is not postgresql_insert:
        return spend
    spend = spend.values(transaction_id=bindparam("p_transaction_id"), member_id=bindparam("p_member_id"),
                         occurred_at=bindparam("p_occurred_at"), amount=bindparam("p_amount"))
    return _add_to_day_statement(insert).add_cte(spend.cte("spend"))


_ADD_SPEND = prebuilt(_add_spend_statement)
_ADD_TO_DAY = prebuilt(_add_to_day_statement)


async def add_spend(session: AsyncSession, transaction_id: str, member_id: str, occurred_at: datetime,
                    amount: int) -> None:
    """The transaction's spend row and its day's sum (prebuilt Core statements: one on PostgreSQL, deferred to
    go out with the session's next statement; two on SQLite)."""
    if dialect_of(session) == "postgresql":
        await defer(session, _ADD_SPEND(session), {
            "p_transaction_id": transaction_id, "p_member_id": member_id, "p_occurred_at": occurred_at,
            "p_amount": amount, "member_id": member_id, "day": utc(occurred_at).date(), "amount": amount})
        return
    await session.execute(_ADD_SPEND(session), {"transaction_id": transaction_id, "member_id": member_id,
                                                "occurred_at": occurred_at, "amount": amount})
    await _add_to_day(session, member_id, occurred_at, amount)


async def _add_to_day(session: AsyncSession, member_id: str, at: datetime, amount: int) -> None:
    await session.execute(_ADD_TO_DAY(session), {"member_id": member_id, "day": utc(at).date(), "amount": amount})


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


def _window_spend(end: str = ""):
    """The spend from ``p_start`` on: whole UTC days from ``p_next_day`` on from the day sums, plus the rows of
    ``p_start``'s own day from ``p_start`` on. Both reads are bounded by the window, never by the history.
    ``end``: a suffix for the parameters' names, so that one statement can take one such sum from another."""
    member_id = bindparam("p_member_id")
    days = select(func.coalesce(func.sum(TierSpendDay.amount), 0)).where(
        TierSpendDay.member_id == member_id, TierSpendDay.day >= bindparam(f"p_next_day{end}")).scalar_subquery()
    edge = select(func.coalesce(func.sum(TierSpend.amount), 0)).where(
        TierSpend.member_id == member_id, TierSpend.occurred_at >= bindparam(f"p_start{end}"),
        TierSpend.occurred_at < bindparam(f"p_next_midnight{end}")).scalar_subquery()
    return days + edge


def _window_params(member_id: str, start: datetime, end: str = "") -> dict:
    next_day: date = utc(start).date() + timedelta(days=1)
    return {"p_member_id": member_id, f"p_next_day{end}": next_day, f"p_start{end}": start,
            f"p_next_midnight{end}": datetime.combine(next_day, time(), tzinfo=UTC)}


_SPEND_SINCE = prebuilt(lambda insert: select(_window_spend()))


async def spend_since(session: AsyncSession, member_id: str, start: datetime) -> int:
    """The spend from ``start`` on (see :func:`_window_spend`)."""
    return int((await fetch(session, _SPEND_SINCE(session), _window_params(member_id, start)))[0][0] or 0)


async def spend_events(session: AsyncSession, member_id: str, start: datetime,
                       end: datetime) -> list[tuple[datetime, int]]:
    rows = await session.execute(select(TierSpend.occurred_at, TierSpend.amount).where(
        TierSpend.member_id == member_id, TierSpend.occurred_at >= start, TierSpend.occurred_at < end,
        TierSpend.amount != 0))
    return [(at, amount) for at, amount in rows]


async def get_state(session: AsyncSession, member_id: str) -> TierState | None:
    return await session.get(TierState, member_id)


_REVIEW_AT = prebuilt(lambda insert: select(TierState.review_at).where(
    TierState.member_id == bindparam("p_member_id")))


# The member's next review, as a column of a statement that reads members (the look-up's): a review fallen due
# is then replayed for the answer without a read of its own when none is.
REVIEW_AT_COLUMN = (select(TierState.review_at).where(TierState.member_id == Member.id).scalar_subquery()
                    .label("tier_review_at"))


async def review_at(session: AsyncSession, member_id: str) -> datetime | None:
    """When the member's tier is next reviewed (None without a state row or a review)."""
    found = await fetch(session, _REVIEW_AT(session), {"p_member_id": member_id})
    return found[0][0] if found else None


_LOCK_STATE = prebuilt(lambda insert: select(TierState.member_id).where(
    TierState.member_id == bindparam("p_member_id")).with_for_update())
_CREATE_STATE = prebuilt(lambda insert: insert(TierState.__table__).on_conflict_do_nothing())


async def lock_state(session: AsyncSession, member_id: str, now: datetime) -> None:
    """Lock the member's tier state (created if absent) until the transaction ends; one statement once it exists.

    It only locks: read what it guards with :func:`read_locked`, in a later statement. Under PostgreSQL's READ
    COMMITTED a statement that waited for a row lock returns that row's newest version but its own, older
    snapshot of every other table, so a tier code read in the locking statement could predate the review that
    held the lock (the member row is not locked); the next statement's snapshot has it."""
    params = {"p_member_id": member_id}
    if not await fetch(session, _LOCK_STATE(session), params):
        await session.execute(_CREATE_STATE(session), {"member_id": member_id, "updated_at": now})
        await fetch(session, _LOCK_STATE(session), params)


async def open_state(session: AsyncSession, member_id: str, now: datetime) -> None:
    """Create a new member's tier state with the member (deferred: it joins the session's next statement), so
    that the first sale's :func:`lock_state` finds it."""
    await defer(session, _CREATE_STATE(session), {"member_id": member_id, "updated_at": now})


@dataclass(frozen=True)
class LockedState:
    """The member's tier state and tier code, read under the tier lock (see :func:`read_locked`)."""

    attained_at: datetime | None
    review_at: datetime | None
    tier_code: str
    spend: int | None  # from the ``spend_since`` asked for; None when not asked


def _locked_query(*, with_spend: bool, bounded: bool = False):
    spend = _window_spend() - _window_spend("_end") if bounded else _window_spend()
    columns = (TierState.attained_at, TierState.review_at, Member.tier_code,
               *((spend.label("spend"),) if with_spend else ()))
    return select(*columns).join(Member, Member.id == TierState.member_id).where(
        TierState.member_id == bindparam("p_member_id"))


_READ_LOCKED = prebuilt(lambda insert: _locked_query(with_spend=False))
_READ_LOCKED_WITH_SPEND = prebuilt(lambda insert: _locked_query(with_spend=True))
_READ_LOCKED_WITH_SPEND_BETWEEN = prebuilt(lambda insert: _locked_query(with_spend=True, bounded=True))


def _read_locked(session: AsyncSession, member_id: str, spend_since: datetime | None,
                 spend_before: datetime | None):
    if spend_since is None:
        return _READ_LOCKED(session), {"p_member_id": member_id}
    if spend_before is None:
        return _READ_LOCKED_WITH_SPEND(session), _window_params(member_id, spend_since)
    return (_READ_LOCKED_WITH_SPEND_BETWEEN(session),
            _window_params(member_id, spend_since) | _window_params(member_id, spend_before, "_end"))


async def read_locked(session: AsyncSession, member_id: str, *, spend_since: datetime | None = None,
                      spend_before: datetime | None = None) -> LockedState:
    """The state :func:`lock_state` locked and the member's tier code; with ``spend_since``, also the spend from
    then on (as :func:`spend_since`), and before ``spend_before`` only when given. Announced first
    (``db.prefetch``), so it goes out with whatever reads the request announced before it, in one statement."""
    statement, params = _read_locked(session, member_id, spend_since, spend_before)
    prefetch(session, statement, params)
    [row] = await fetch(session, statement, params)
    return LockedState(row.attained_at, row.review_at, row.tier_code,
                       None if spend_since is None else int(row.spend or 0))


_SAVE_STATE = prebuilt(lambda insert: update(TierState).where(TierState.member_id == bindparam("p_member_id"))
                       .values(attained_at=bindparam("p_attained_at"), review_at=bindparam("p_review_at"),
                               updated_at=bindparam("p_updated_at")))


async def save_state(session: AsyncSession, member_id: str, *, attained_at: datetime | None,
                     review_at: datetime | None, now: datetime) -> None:
    """The locked state's new attainment and review (deferred on PostgreSQL: it goes out with the next
    statement)."""
    await defer(session, _SAVE_STATE(session), {"p_member_id": member_id, "p_attained_at": attained_at,
                                                "p_review_at": review_at, "p_updated_at": now})


_SAVE_CODE = prebuilt(lambda insert: update(Member.__table__).where(Member.id == bindparam("p_member_id"))
                      .values(tier_code=bindparam("p_tier_code")))


async def save_code(session: AsyncSession, member_id: str, code: str) -> None:
    """The member's new tier code (deferred on PostgreSQL, as :func:`save_state`; the member is not locked: the
    tier lock, held by the caller, serializes every change to it)."""
    await defer(session, _SAVE_CODE(session), {"p_member_id": member_id, "p_tier_code": code})


async def add_history(session: AsyncSession, rows: Sequence[TierHistory]) -> None:
    session.add_all(rows)
    await session.flush()


async def history(session: AsyncSession, member_id: str) -> list[TierHistory]:
    rows = await session.scalars(select(TierHistory).where(TierHistory.member_id == member_id)
                                 .order_by(TierHistory.id))
    return list(rows)


async def attained_before(session: AsyncSession, member_id: str, code: str, history_id: int) -> datetime | None:
    """When the member last reached ``code`` before the history row ``history_id`` (None: never, by the
    history)."""
    return await session.scalar(select(TierHistory.at).where(
        TierHistory.member_id == member_id, TierHistory.to_code == code, TierHistory.id < history_id)
        .order_by(TierHistory.id.desc()).limit(1))


async def latest_changes(session: AsyncSession, member_id: str, reason: str, *, limit: int) -> list[TierHistory]:
    """The member's latest tier changes for ``reason``, the latest first."""
    return list(await session.scalars(select(TierHistory).where(
        TierHistory.member_id == member_id, TierHistory.reason == reason)
        .order_by(TierHistory.id.desc()).limit(limit)))


async def change_of_transaction(session: AsyncSession, transaction_id: str) -> TierHistory | None:
    return await session.scalar(select(TierHistory).where(TierHistory.transaction_id == transaction_id)
                                .order_by(TierHistory.id).limit(1))


async def due_members(session: AsyncSession, as_of: datetime, *, after: str, limit: int) -> list[str]:
    rows = await session.scalars(select(TierState.member_id).where(
        TierState.review_at <= as_of, TierState.member_id > after).order_by(TierState.member_id).limit(limit))
    return list(rows)


def _standing_query():
    """The member's next review, the window's spend and the latest tier change, each a sub-select of one
    statement (the change's three columns read the same index entry)."""
    member_id = bindparam("p_member_id")

    def last(column):
        return (select(column).where(TierHistory.member_id == member_id)
                .order_by(TierHistory.id.desc()).limit(1).scalar_subquery())

    review = select(TierState.review_at).where(TierState.member_id == member_id).scalar_subquery()
    return select(review.label("review_at"), _window_spend().label("spend"), last(TierHistory.reason).label("reason"),
                  last(TierHistory.to_code).label("to_code"), last(TierHistory.at).label("at"))


_STANDING = prebuilt(lambda insert: _standing_query())


@dataclass(frozen=True)
class Figures:
    """What a tier's standing is read from (see :func:`figures`)."""

    review_at: datetime | None
    spend: int  # in the window starting at the ``start`` asked for
    last_change: tuple[str, str, datetime] | None  # ``(reason, to_code, at)`` of the latest change


async def figures(session: AsyncSession, member_id: str, start: datetime) -> Figures:
    """The member's next review, the spend from ``start`` on and the latest tier change, in one statement."""
    [row] = await fetch(session, _STANDING(session), _window_params(member_id, start))
    return Figures(row.review_at, int(row.spend or 0),
                   None if row.reason is None else (row.reason, row.to_code, row.at))


def prefetch_figures(session: AsyncSession, member_id: str, start: datetime) -> None:
    """Announce :func:`figures`' read (``db.prefetch``)."""
    prefetch(session, _STANDING(session), _window_params(member_id, start))
