"""Tiers (DESIGN §5): qualifying spend, upgrades inside the commit, scheduled reviews. Never commits.

The checkout calls :func:`record_commit` (in the commit's transaction), :func:`record_return` and
:func:`record_void`; reviews run from :func:`sweep_batch` (``loyalty sweep``) and lazily from :func:`refresh`
when a member is read or checks out — both replay the same pure rule, so they give the same answer for the same
"now". A changed ladder applies to future upgrades and reviews; history rows keep the codes they were written
with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from service.clock import utc
from service.events import service as events
from service.members.models import Member
from service.program.schemas import ProgramPublic
from service.tiers import repository, rules
from service.tiers.models import TierHistory
from service.tiers.schemas import TierHistoryItem, TierPublic

SWEEP_BATCH = 200


@dataclass(frozen=True)
class Ladder:
    codes: tuple[str, ...]
    thresholds: tuple[int, ...]
    window_months: int

    @classmethod
    def of(cls, program: ProgramPublic) -> Ladder:
        return cls(tuple(t.code for t in program.tiers), tuple(t.min_qualifying_spend for t in program.tiers),
                   program.tier_window_months)


_INSTANT = timedelta(microseconds=1)  # a window ending with a sale holds the sale: [start, occurred_at]


async def qualifying_spend(session: AsyncSession, member_id: str, now: datetime, window_months: int) -> int:
    return await repository.spend_since(session, member_id, rules.window_start(now, window_months))


def _hold_code(member: Member, code: str) -> None:
    """The tier code the database holds for the member, on the member in hand: an ORM object (set as loaded, so
    the session writes nothing for it) or the checkout's copy of the member's columns."""
    if isinstance(member, Member):
        set_committed_value(member, "tier_code", code)
    else:
        member.tier_code = code


async def _apply(session: AsyncSession, member: Member, new: rules.State, changes: list[rules.Change],
                 ladder: Ladder, now: datetime, *, transaction_id: str | None = None) -> None:
    """Write a locked state's new level, attainment and review, with a history row and an event per change."""
    await repository.save_code(session, member.id, ladder.codes[new.level])
    _hold_code(member, ladder.codes[new.level])
    await repository.save_state(session, member.id, attained_at=new.attained_at, review_at=new.review_at, now=now)
    history = []
    for change in changes:
        history.append(TierHistory(
            member_id=member.id, from_code=ladder.codes[change.from_level],
            to_code=ladder.codes[change.to_level], at=change.at, reason=change.reason,
            transaction_id=transaction_id if change.reason in (rules.UPGRADE, rules.REVERSAL) else None,
            created_at=now))
    await repository.add_history(session, history)
    for row in history:
        await events.emit(session, "tier.changed", {
            "member_id": member.id, "from": row.from_code, "to": row.to_code, "reason": row.reason, "at": row.at,
            "transaction_id": row.transaction_id}, at=row.at, member_id=member.id)


async def _review_locked(session: AsyncSession, member: Member, ladder: Ladder, now: datetime, *,
                         with_spend: bool = False, spend_window_end: datetime | None = None,
                         reviews_until: datetime | None = None) -> tuple[rules.State, int, int | None]:
    """Lock the member's tier, read it (in the statement after the lock: see ``repository.lock_state``) and
    apply the reviews due by ``now`` (by ``reviews_until`` when given: a backdated sale's time); the state, the
    number of changes, and, if asked, the spend of the window ending now, or of the one ending at
    ``spend_window_end`` (included) when given."""
    await repository.lock_state(session, member.id, now)
    end = now if spend_window_end is None else spend_window_end
    locked = await repository.read_locked(
        session, member.id, spend_since=rules.window_start(end, ladder.window_months) if with_spend else None,
        spend_before=None if spend_window_end is None else spend_window_end + _INSTANT)
    # The member was read before the lock: a commit or review that changed the tier meanwhile is visible only now.
    _hold_code(member, locked.tier_code)
    state, changes, due = await _replay(session, member, locked, ladder, reviews_until or now)
    if due:
        await _apply(session, member, state, changes, ladder, now)
    return state, len(changes), locked.spend


async def _replay(session: AsyncSession, member: Member, state_row, ladder: Ladder,
                  now: datetime) -> tuple[rules.State, list[rules.Change], bool]:
    """The member's tier state at ``now`` with the reviews due by then replayed (in memory), their changes, and
    whether any review was due (one that keeps the level still moves the next review on). ``state_row`` has the
    state's ``attained_at`` and ``review_at``."""
    state = rules.State(rules.level_of(member.tier_code, ladder.codes), state_row.attained_at, state_row.review_at)
    if state.level > 0 and state.review_at is not None and state.review_at <= now:
        events = await repository.spend_events(
            session, member.id, rules.window_start(state.review_at, ladder.window_months), now)
        return (*rules.review(state, now, ladder.thresholds, ladder.window_months, events), True)
    return state, [], False


async def refresh(session: AsyncSession, member: Member, program: ProgramPublic, now: datetime) -> None:
    """Replay the member's due reviews (idempotent; writes only when one fell due)."""
    review_at = await repository.review_at(session, member.id)
    if review_at is None or review_at > now:
        return
    await _review_locked(session, member, Ladder.of(program), now)


@dataclass(frozen=True)
class Standing:
    """The member's tier as a quote shows it at ``now``."""

    code: str  # with the reviews due by then replayed in memory
    upgraded_at: datetime | None  # when the member reached it by spending (None if they hold it otherwise)
    spend: int  # the qualifying spend of the window ending at ``now``


async def standing(session: AsyncSession, member: Member, program: ProgramPublic, now: datetime) -> Standing:
    """The member's tier at ``now`` in one statement, nothing written: the reviews due by then are replayed in
    memory (one more read when one is due). The next commit, read of the member or ``loyalty sweep`` applies
    them for real (and emits their events); the result is the same, since a review depends only on the spend in
    its window."""
    ladder = Ladder.of(program)
    found = await repository.figures(session, member.id, rules.window_start(now, ladder.window_months))
    code = member.tier_code
    if found.review_at is not None and found.review_at <= now:
        state, _, _ = await _replay(session, member, await repository.get_state(session, member.id), ladder, now)
        code = ladder.codes[state.level]
    return Standing(code, rules.upgraded_at(found.last_change, code), found.spend)


def prefetch_standing(session: AsyncSession, member: Member, program: ProgramPublic, now: datetime) -> None:
    """Announce :func:`standing`'s read (``db.prefetch``: it goes out with the request's other announced reads)."""
    repository.prefetch_figures(session, member.id, rules.window_start(now, Ladder.of(program).window_months))


@dataclass
class Locked:
    """The member's tier state, locked for the rest of the transaction, with due reviews applied, and the
    qualifying spend of the window ending at ``now`` (or at ``window_end``, a sale's ``occurred_at`` before that
    window) as it stood when the lock was taken."""

    state: rules.State
    now: datetime
    spend: int
    window_end: datetime | None = None


async def open_state(session: AsyncSession, member_id: str, now: datetime) -> None:
    """A new member's tier state, created with the member (``members.service.enroll``): the first sale's
    :func:`lock` then takes it in one statement (a member enrolled without one gets it from that lock)."""
    await repository.open_state(session, member_id, now)


async def lock(session: AsyncSession, member: Member, program: ProgramPublic, now: datetime, *,
               occurred_at: datetime | None = None) -> Locked:
    """Lock the member's tier (the checkout calls this after the ledger lock, before pricing), re-read the tier
    code under the lock and replay the reviews due by the sale's ``occurred_at``, so the price uses the tier as
    it stood when the sale was made.

    A backdated sale (an import's history, oldest first; a till's sale captured offline) leaves the reviews due
    between its time and now to the next read, sale or sweep: they come after it, and the windows they judge
    hold its spend. Applied before it, as they were until 2026-12-07, they judged windows without the sale, the
    member fell, the sale was priced at the lower tier and upgraded again at its own earlier time: an imported
    member's history was a fall and a rise per purchase, out of order.

    The window's spend is read with the tier, in the statement after the lock (together with the reads the
    commit announced, ``db.prefetch``), and kept as a running figure: this transaction adds only its own sale
    (:func:`record_commit` adds it to the figure instead of reading the window again). Other commits of the
    member wait for the member's ledger lock, taken before this; a return or void lowers an earlier sale's spend
    under that sale's row lock, so one committing after this read is ordered after this commit, as it could be
    when it commits a moment later.

    A sale whose ``occurred_at`` falls before the window ending now is judged on the window that ends with it
    (:func:`record_commit`): that window's spend is read instead, in the same statement."""
    ladder = Ladder.of(program)
    before = occurred_at is not None and utc(occurred_at) < utc(rules.window_start(now, ladder.window_months))
    reviews_until = min(utc(occurred_at), utc(now)) if occurred_at is not None else None
    state, _, spend = await _review_locked(session, member, ladder, now, with_spend=True,
                                           spend_window_end=occurred_at if before else None,
                                           reviews_until=reviews_until)
    return Locked(state, now, spend or 0, occurred_at if before else None)


async def record_commit(session: AsyncSession, member: Member, program: ProgramPublic, locked: Locked, *,
                        transaction_id: str, occurred_at: datetime, amount: int,
                        now: datetime) -> tuple[str, str] | None:
    """Count the commit's qualifying spend at its ``occurred_at``; upgrade at once if the window's spend now
    crosses a higher threshold. Returns ``(from, to)`` when the tier changed upward.

    A sale from before the current window (an import replaying a member's history, oldest first; an admin's
    backdated sale) counts in no window ending now: it is judged on the window that ends with it, as a till
    would have judged it then. An upgrade it makes is attained at its ``occurred_at`` and reviewed a window
    later; reviews fallen due since replay as any others (the next read, sale or sweep)."""
    ladder = Ladder.of(program)
    await repository.add_spend(session, transaction_id, member.id, occurred_at, amount)
    state = locked.state
    before = utc(occurred_at) < utc(rules.window_start(now, ladder.window_months))
    if now == locked.now and (locked.window_end == occurred_at if before else locked.window_end is None):
        spend = locked.spend + amount  # the window the lock read, which holds this sale
    elif before:
        spend = sum(n for _, n in await repository.spend_events(
            session, member.id, rules.window_start(occurred_at, ladder.window_months), occurred_at + _INSTANT))
    else:
        spend = await qualifying_spend(session, member.id, now, ladder.window_months)
    new, change = rules.upgrade(state, spend, ladder.thresholds, occurred_at, ladder.window_months)
    if change is None:
        return None
    await _apply(session, member, new, [change], ladder, now, transaction_id=transaction_id)
    return ladder.codes[change.from_level], ladder.codes[new.level]


async def take_back_upgrade(session: AsyncSession, member_id: str, transaction_id: str, program: ProgramPublic,
                            now: datetime) -> None:
    """After a void or return has lowered a sale's spend (``transaction_id``'s): each upgrade the member still
    holds goes back as far as the spend no longer carries it (``rules.reversed_upgrade``), the latest first, under
    the tier lock. Not only the returned sale's own upgrade: a purchase split in two (silver by the first, gold
    by a cent more) whose first half comes back leaves the second's upgrade without its spend, and then the tier
    the first gave. Called with the member's ledger accounts locked, as a commit takes them, so the tier lock
    comes second here too."""
    ladder = Ladder.of(program)
    await repository.lock_state(session, member_id, now)
    locked = await repository.read_locked(session, member_id)
    if rules.level_of(locked.tier_code, ladder.codes) == 0:
        return
    spend_now = await qualifying_spend(session, member_id, now, ladder.window_months)
    for upgrade in await repository.latest_changes(session, member_id, rules.UPGRADE,
                                                              limit=len(ladder.codes)):
        if locked.attained_at is not None and utc(upgrade.at) > utc(locked.attained_at):
            continue  # taken back already: the member holds what came before it
        window = await repository.read_locked(session, member_id,
                                              spend_since=rules.window_start(upgrade.at, ladder.window_months),
                                              spend_before=upgrade.at + _INSTANT)
        change = rules.Change(rules.level_of(upgrade.from_code, ladder.codes),
                              rules.level_of(upgrade.to_code, ladder.codes), upgrade.at, rules.UPGRADE)
        held = rules.State(rules.level_of(locked.tier_code, ladder.codes), locked.attained_at, locked.review_at)
        before = None
        if change.from_level > 0:
            before = await repository.attained_before(session, member_id, upgrade.from_code, upgrade.id)
        taken = rules.reversed_upgrade(held, change, window.spend or 0, ladder.thresholds, ladder.window_months,
                                       now, attained_before=before, spend_now=spend_now)
        if taken is None:
            return
        new, reversal = taken
        await _apply(session, SimpleNamespace(id=member_id, tier_code=locked.tier_code), new, [reversal], ladder,
                     now, transaction_id=transaction_id)
        locked = await repository.read_locked(session, member_id)
        if new.level == 0:
            return


async def record_return(session: AsyncSession, transaction_id: str, amount: int) -> None:
    """A return lowers the transaction's spend at its own ``occurred_at`` (the upgrade the sale made:
    :func:`take_back_upgrade`)."""
    if amount:
        await repository.reduce_spend(session, transaction_id, amount)


async def record_void(session: AsyncSession, transaction_id: str) -> None:
    """A void removes the transaction's spend (the upgrade the sale made: :func:`take_back_upgrade`)."""
    await repository.clear_spend(session, transaction_id)


async def change_of(session: AsyncSession, transaction_id: str) -> tuple[str | None, str] | None:
    row = await repository.change_of_transaction(session, transaction_id)
    return None if row is None else (row.from_code, row.to_code)


async def summary(session: AsyncSession, member: Member, program: ProgramPublic, now: datetime) -> TierPublic:
    await refresh(session, member, program, now)
    ladder = Ladder.of(program)
    level = rules.level_of(member.tier_code, ladder.codes)
    tier = program.tiers[level]
    spend = await qualifying_spend(session, member.id, now, ladder.window_months)
    next_level, needed = rules.spend_to_next(spend, level, ladder.thresholds)
    state = await repository.get_state(session, member.id)
    history = await repository.history(session, member.id)
    return TierPublic(
        code=tier.code, name=tier.name, qualifying_spend=spend,
        next_tier=None if next_level is None else ladder.codes[next_level], spend_to_next=needed,
        attained_at=state.attained_at if state and level > 0 else None,
        review_at=state.review_at if state and level > 0 else None,
        earn_multiplier=tier.earn_multiplier, discount_percent=tier.discount_percent, perks=list(tier.perks),
        history=[TierHistoryItem(from_=h.from_code, to=h.to_code, at=h.at, reason=h.reason) for h in history],
    )


def nudge(program: ProgramPublic, code: str | None, spend: int) -> tuple[int, str] | None:
    """How much more spend reaches the tier above ``code`` with the window's ``spend`` (for the till's nudges),
    or None at the top."""
    ladder = Ladder.of(program)
    next_level, needed = rules.spend_to_next(spend, rules.level_of(code, ladder.codes), ladder.thresholds)
    if next_level is None or not needed:
        return None
    return needed, program.tiers[next_level].name


@dataclass(frozen=True)
class SweepResult:
    members: int
    changes: int


async def sweep_batch(session: AsyncSession, program: ProgramPublic, as_of: datetime, *,
                      after: str = "") -> tuple[SweepResult, str | None]:
    """Replay due reviews for one batch of members (ordered by id after ``after``); returns the last id."""
    from service.members import repository as members_repository

    ids = await repository.due_members(session, as_of, after=after, limit=SWEEP_BATCH)
    ladder = Ladder.of(program)
    changes = 0
    for member_id in ids:
        member = await members_repository.get(session, member_id)
        if member is None:
            continue
        changes += (await _review_locked(session, member, ladder, as_of))[1]
    return SweepResult(len(ids), changes), (ids[-1] if ids else None)
