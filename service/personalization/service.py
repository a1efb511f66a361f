"""Personalization (DESIGN §6): running figures kept inside the checkout's transactions, segments (live for one
member, by ``loyalty sweep`` for everyone), greetings, the birthday bonus. Never commits.

The checkout calls :func:`activity_for_commit` and :func:`record_commit` in the commit's transaction (after the
member's ledger lock, which serializes them), :func:`record_void` and :func:`record_return`. They touch the
member's one activity row and one day row, whatever the history (a void re-reads the first or last purchase from
the transactions' index when it removes that one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout.rules import tier_figures
from service.ledger import service as ledger
from service.ledger.rules import POINTS, LotPolicy, Movement
from service.members.models import Member
from service.personalization import offers, repository, rules
from service.personalization.models import MemberActivity
from service.personalization.schemas import (
    Greeting,
    MemberOffers,
    SegmentMove,
    SegmentMovement,
    SegmentPublic,
    SegmentReport,
    ThresholdsPublic,
)
from service.points.rules import lot_expiry
from service.program.schemas import ProgramPublic
from service.program.service import StoreInfo
from service.tiers import service as tiers

SWEEP_BATCH = 1000
BIRTHDAY_BONUS_KIND = "birthday_bonus"


def local(at: datetime, timezone: str) -> datetime:
    return at.astimezone(ZoneInfo(timezone))


# -- segments ------------------------------------------------------------------------------------------------------


async def thresholds(session: AsyncSession, program: ProgramPublic) -> tuple[rules.Thresholds, str]:
    """The quadrant thresholds in force and where they come from: values the program fixes win over the last
    sweep's medians, which win over the defaults."""
    fixed = program.segments
    swept = await repository.get_thresholds(session)
    base = rules.Thresholds(swept.min_frequency, swept.min_monetary) if swept else rules.Thresholds(
        rules.DEFAULT_MIN_FREQUENCY, rules.DEFAULT_MIN_MONETARY)
    source = "sweep" if swept else "default"
    if fixed.min_frequency is not None and fixed.min_monetary is not None:
        source = "program"
    return rules.Thresholds(fixed.min_frequency if fixed.min_frequency is not None else base.min_frequency,
                            fixed.min_monetary if fixed.min_monetary is not None else base.min_monetary), source


def _day(at: datetime | None) -> date | None:
    return None if at is None else at.date()


def _since(enrolled_at: datetime, first: date | None) -> date:
    return min(enrolled_at.date(), first) if first else enrolled_at.date()


def _lifetime(member: Member, activity: MemberActivity | None, frequency: int = 0,
              monetary: int = 0) -> rules.Figures:
    """The member's figures from the running row (the window's, when needed, from the days)."""
    first = _day(activity.first_purchase_at) if activity else None
    return rules.Figures(
        customer_since=_since(member.enrolled_at, first), purchases=activity.purchases if activity else 0,
        first_purchase=first, last_purchase=_day(activity.last_purchase_at) if activity else None,
        frequency=frequency, monetary=monetary)


async def figures(session: AsyncSession, member: Member, activity: MemberActivity | None,
                  today: date) -> rules.Figures:
    """The member's figures as of ``today``: lifetime ones from the running row, the window from the days."""
    frequency, monetary = await repository.window(session, member.id, rules.window_start(today), today)
    return _lifetime(member, activity, frequency, monetary)


async def segment_public(session: AsyncSession, member: Member, program: ProgramPublic,
                         now: datetime) -> SegmentPublic:
    """The member's segment as of now: lifetime figures from the running row, the window from the days."""
    activity = await repository.get_activity(session, member.id)
    today = now.date()
    seg = rules.segment(await figures(session, member, activity, today), today,
                        (await thresholds(session, program))[0])
    return SegmentPublic(quadrant=seg.quadrant, lifecycle=seg.lifecycle, recency_days=seg.recency_days,
                         frequency=seg.frequency, monetary=seg.monetary,
                         last_purchase_on=_day(activity.last_purchase_at) if activity else None)


async def report(session: AsyncSession, program: ProgramPublic) -> SegmentReport:
    quadrants, lifecycles, segmented, pending = await repository.segment_counts(session)
    swept = await repository.get_thresholds(session)
    current, source = await thresholds(session, program)
    moved, cycled, since = await repository.segment_moves(session, swept.as_of) if swept else ([], [], None)
    return SegmentReport(
        as_of=swept.as_of if swept else None, members=segmented,
        quadrants={q: quadrants.get(q, 0) for q in rules.QUADRANTS},
        lifecycles={c: lifecycles.get(c, 0) for c in rules.LIFECYCLES}, not_segmented=pending,
        thresholds=ThresholdsPublic(min_frequency=current.min_frequency, min_monetary=current.min_monetary,
                                    source=source),
        movement=SegmentMovement(since=since, quadrants=_moves(moved, rules.QUADRANTS),
                                 lifecycles=_moves(cycled, rules.LIFECYCLES)))


def _moves(rows: Iterable[Row], order: Sequence[str]) -> list[SegmentMove]:
    return [SegmentMove(from_=f, to=t, members=n)
            for f, t, n in rules.ordered_moves(((f, t, int(n)) for f, t, n in rows), order)]


async def sweep_thresholds(session: AsyncSession, program: ProgramPublic, as_of: datetime,
                           now: datetime) -> rules.Thresholds:
    """Step one of the segment sweep: the medians over the members who bought in the window ending ``as_of``."""
    today = as_of.date()
    window = await repository.window_figures(session, rules.window_start(today), today)
    medians = rules.median_thresholds(window)
    await repository.save_thresholds(session, {"min_frequency": medians.min_frequency,
                                               "min_monetary": medians.min_monetary,
                                               "active_members": len(window), "as_of": as_of, "computed_at": now})
    current, _ = await thresholds(session, program)
    return current


@dataclass(frozen=True)
class SweepResult:
    members: int
    last: str | None


async def sweep_batch(session: AsyncSession, thresholds_: rules.Thresholds, as_of: datetime, now: datetime, *,
                      after: str = "", limit: int = SWEEP_BATCH) -> SweepResult:
    """Step two, one batch of active members (by id after ``after``): their segment as of ``as_of``, from their
    days up to that day (exact for any ``--as-of``), written to their activity rows."""
    members = await repository.members_after(session, after, limit)
    today = as_of.date()
    by_member = await repository.day_figures(session, [m for m, _ in members], rules.window_start(today), today)
    rows = []
    for member_id, enrolled_at in members:
        purchases, first, last, frequency, monetary = by_member.get(member_id, (0, None, None, 0, 0))
        seg = rules.segment(rules.Figures(_since(enrolled_at, first), purchases, first, last, frequency, monetary),
                            today, thresholds_)
        rows.append({"member_id": member_id, "quadrant": seg.quadrant, "lifecycle": seg.lifecycle, "as_of": as_of,
                     "updated_at": now})
    await repository.save_segments(session, rows)
    return SweepResult(len(members), members[-1][0] if members else None)


# -- the checkout's running figures ---------------------------------------------------------------------------------


async def activity_for_commit(session: AsyncSession, member_id: str) -> MemberActivity | None:
    """The member's running figures, read-only (a plain row with the model's columns), read after the member's
    ledger lock: commits of one member take turns. :func:`record_commit` changes them, with an upsert."""
    return await repository.activity_row(session, member_id)


def prefetch_activity(session: AsyncSession, member_id: str) -> None:
    """Announce :func:`activity_for_commit`'s read (``db.prefetch``), for a request that reads it at a moment that
    does not matter to it: the quote, or the commit under the member's lock (only the sweep's quadrant changes
    outside that lock, and it may land a moment before or after the sale either way)."""
    repository.prefetch_activity_row(session, member_id)


def member_segments(member: Member, activity: MemberActivity | None, tier: str, today: date) -> frozenset[str]:
    """What audiences and bonus events match the member on: tier code, the sweep's quadrant, the lifecycle now."""
    found = {tier, rules.lifecycle(_lifetime(member, activity), today)}
    if activity is not None and activity.quadrant:
        found.add(activity.quadrant)
    return frozenset(found)


def birthday_bonus(member: Member, activity: MemberActivity | None, program: ProgramPublic, occurred_at: datetime,
                   store: StoreInfo) -> tuple[int | None, tuple[Movement, ...]]:
    """``(birthday year, movements)`` when this sale earns the birthday bonus: points as a new lot expiring like
    earned points, posted with the sale (so its void takes them back)."""
    points = program.birthday_bonus.points
    year = rules.birthday_bonus_year(member.birthday, local(occurred_at, store.timezone).date(), points,
                                     activity.birthday_bonus_year if activity else None)
    if year is None:
        return None, ()
    return year, (Movement(account=POINTS, asset=POINTS, amount=points, contra="program:points_issued",
                           kind=BIRTHDAY_BONUS_KIND, lots=LotPolicy.NEW, earned_at=occurred_at,
                           expires_at=lot_expiry(occurred_at, program.points_expiry_months)),)


async def record_commit(session: AsyncSession, member_id: str, *, transaction_id: str, occurred_at: datetime,
                        net: int, now: datetime, birthday_year: int | None) -> None:
    """Count the sale on its day and in the running figures (two upserts, one statement on PostgreSQL)."""
    await repository.count_sale(session, member_id, occurred_at, now, birthday_year=birthday_year,
                                transaction_id=transaction_id, net=net)


async def record_return(session: AsyncSession, member_id: str, occurred_at: datetime, amount: int) -> None:
    """A return lowers the sale's day's spend; the visit still counts."""
    if amount:
        await repository.add_to_day(session, member_id, occurred_at.date(), 0, -amount)


async def record_void(session: AsyncSession, member_id: str, transaction_id: str, occurred_at: datetime,
                      remaining_spend: int, now: datetime) -> None:
    """A void removes the sale from its day and from the running figures; a birthday bonus it carried (taken
    back with the sale's ledger entries) is due again at the next sale in the birthday week."""
    await repository.add_to_day(session, member_id, occurred_at.date(), -1, -remaining_spend)
    activity = await repository.get_activity(session, member_id)
    if activity is None:
        return
    activity.purchases = max(activity.purchases - 1, 0)
    if occurred_at in (activity.first_purchase_at, activity.last_purchase_at):
        activity.first_purchase_at, activity.last_purchase_at = await repository.purchase_bounds(
            session, member_id, excluding=transaction_id)
    _forget_birthday_bonus(activity, transaction_id)
    activity.updated_at = now


async def record_full_return(session: AsyncSession, member_id: str, transaction_id: str, now: datetime) -> None:
    """Everything on the sale came back: a birthday bonus it carried (clawed back with the return) is due again at
    the next sale in the birthday week. The visit still counts (:func:`record_return`)."""
    activity = await repository.get_activity(session, member_id)
    if activity is not None and _forget_birthday_bonus(activity, transaction_id):
        activity.updated_at = now


def _forget_birthday_bonus(activity: MemberActivity, transaction_id: str) -> bool:
    if activity.birthday_bonus_transaction_id != transaction_id:
        return False
    if activity.birthday_bonus_year is not None:
        activity.birthday_bonus_year = rules.birthday_bonus_year_taken_back(activity.birthday_bonus_year)
    activity.birthday_bonus_transaction_id = None
    return True


# -- greetings -----------------------------------------------------------------------------------------------------


def greeting(member: Member, activity: MemberActivity | None, program: ProgramPublic, store: StoreInfo,
             now: datetime, *, upgraded_at: datetime | None, tier_name: str) -> Greeting:
    """The till's greeting: the member's language, the time of day at the store, the most relevant occasion.
    ``activity``: the member's running row, as the quote has already read it."""
    lifetime = _lifetime(member, activity)
    purchases = lifetime.purchases
    lifecycle = rules.lifecycle(lifetime, now.date())
    at_store = local(now, store.timezone)
    occasion = rules.occasion(rules.Visit(today=at_store.date(), birthday=member.birthday, upgraded_at=upgraded_at,
                                          now=now, lifecycle=lifecycle, purchases=purchases))
    table = rules.templates(program.greetings)
    locale = rules.resolve_locale(member.locale, table)
    text = rules.greeting_text(table[locale], occasion, name=member.name, hour=at_store.hour, tier=tier_name,
                               visits=purchases + 1)
    return Greeting(text=text, locale=locale, occasion=occasion)


# -- the app's offers ----------------------------------------------------------------------------------------------


async def member_offers(session: AsyncSession, member: Member, program: ProgramPublic, now: datetime, *,
                        timezone: str | None = None) -> MemberOffers:
    """What the till would offer, without a basket (the app's offers page), its dates told on ``timezone``'s
    calendar (UTC without one). The app has no store, so it names the zone: a till names its store's days, and
    for a member of a Berlin shop a voucher valid from midnight there is "from the 15th" at the till and would
    be "from the 14th" in UTC."""
    await tiers.refresh(session, member, program, now)
    activity = await repository.get_activity(session, member.id)
    tier = tier_figures(program.tiers, member.tier_code)[0]
    locale = rules.resolve_locale(member.locale, rules.templates(program.greetings))
    return await offers.ranked(session, offers.OfferContext(
        member=member, program=program, locale=locale, now=now, balances=await ledger.balances(session, member.id),
        segments=member_segments(member, activity, tier, now.date()), timezone=timezone))
