"""Tier rules (DESIGN §5), pure: the ladder, upgrades and the review schedule. "Now" is always a parameter.

Levels are indexes into the program's ladder (ascending; level 0 is the entry tier, never reviewed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from service.points.rules import add_months

UPGRADE = "qualifying_spend"
REVIEW = "review"
REVERSAL = "reversal"  # a void or return took back the upgrade its sale had made


@dataclass(frozen=True)
class State:
    level: int
    attained_at: datetime | None
    review_at: datetime | None


@dataclass(frozen=True)
class Change:
    from_level: int
    to_level: int
    at: datetime
    reason: str


def level_of(code: str | None, codes: Sequence[str]) -> int:
    """The level of a tier code; a code no longer on the ladder (or none) counts as the entry tier."""
    return codes.index(code) if code in codes else 0


def qualified_level(spend: int, thresholds: Sequence[int]) -> int:
    """The highest level whose ``min_qualifying_spend`` the spend reaches."""
    return max(i for i, minimum in enumerate(thresholds) if spend >= minimum)


def window_start(at: datetime, window_months: int) -> datetime:
    return add_months(at, -window_months)


def next_review(attained_at: datetime, after: datetime, window_months: int) -> datetime:
    """The first of ``attained_at + k·window`` (k ≥ 1, counted from the attainment so month-end days do not
    drift) that is later than ``after``."""
    k = 1
    while (at := add_months(attained_at, k * window_months)) <= after:
        k += 1
    return at


def upgrade(state: State, spend: int, thresholds: Sequence[int], occurred_at: datetime,
            window_months: int) -> tuple[State, Change | None]:
    """Upgrade at once (possibly several levels) when the spend crosses a higher threshold; attained at the
    ``occurred_at`` of the commit that crossed it, reviewed a window later."""
    target = qualified_level(spend, thresholds)
    if target <= state.level:
        return state, None
    new = State(target, occurred_at, add_months(occurred_at, window_months))
    return new, Change(state.level, target, occurred_at, UPGRADE)


def reversed_upgrade(held: State, upgrade: Change, spend: int, thresholds: Sequence[int], window_months: int,
                     now: datetime, *, attained_before: datetime | None,
                     spend_now: int = 0) -> tuple[State, Change] | None:
    """What a void or return does to an upgrade that ``spend`` (the window that ended with the upgrading sale, as
    it now stands) may no longer carry, while the member still holds what that sale gave (``held``: attained by
    the upgrade and not reviewed since; at its tier, or at a tier between that an earlier return of it left).

    The member goes back to the tier the sale found, or to the highest tier that window still reaches, or that
    the window ending now (``spend_now``: later sales) reaches. Back at the tier the sale found, its attainment is
    what it was (``attained_before``) and its review the first after the sale (a review fallen due since replays
    as any other); at a tier between, the sale attained it. None when the upgrade stands, or when a review or a
    later upgrade has judged the member since (the next review judges the spend as it now stands)."""
    if (held.attained_at != upgrade.at or held.review_at != add_months(upgrade.at, window_months)
            or not upgrade.from_level < held.level <= upgrade.to_level):
        return None
    target = max(upgrade.from_level, qualified_level(spend, thresholds), qualified_level(spend_now, thresholds))
    if target >= held.level:
        return None
    if target == 0:
        new = State(0, None, None)
    elif target == upgrade.from_level and attained_before is not None:
        new = State(target, attained_before, next_review(attained_before, upgrade.at, window_months))
    else:
        new = State(target, upgrade.at, add_months(upgrade.at, window_months))
    return new, Change(held.level, target, now, REVERSAL)


def spend_between(events: Sequence[tuple[datetime, int]], start: datetime, end: datetime) -> int:
    """Spend counted at its time in ``[start, end)``."""
    return sum(amount for at, amount in events if start <= at < end)


def review(state: State, now: datetime, thresholds: Sequence[int], window_months: int,
           events: Sequence[tuple[datetime, int]]) -> tuple[State, list[Change]]:
    """Replay, in order, every review due at or before ``now``.

    A review at ``r`` keeps the highest tier the spend in ``[r − window, r)`` qualifies for, dropping at most one
    level; a kept tier is reviewed again a window later (counted from its attainment); a dropped-to tier counts
    as attained at ``r``. The entry tier is never reviewed. ``events`` must cover
    ``[state.review_at − window, now)``.
    """
    changes: list[Change] = []
    while state.level > 0 and state.review_at is not None and state.review_at <= now:
        r = state.review_at
        spend = spend_between(events, window_start(r, window_months), r)
        if qualified_level(spend, thresholds) >= state.level:
            state = replace(state, review_at=next_review(state.attained_at or r, r, window_months))
        else:
            lower = state.level - 1
            changes.append(Change(state.level, lower, r, REVIEW))
            state = State(lower, r, add_months(r, window_months) if lower > 0 else None)
    if state.level == 0:
        state = replace(state, review_at=None)
    return state, changes


def spend_to_next(spend: int, level: int, thresholds: Sequence[int]) -> tuple[int | None, int | None]:
    """``(next level, spend still needed)``, or ``(None, None)`` at the top of the ladder."""
    if level + 1 >= len(thresholds):
        return None, None
    return level + 1, max(thresholds[level + 1] - spend, 0)


def upgraded_at(last_change: tuple[str, str, datetime] | None, code: str | None) -> datetime | None:
    """When the member reached ``code`` by spending, from their latest change ``(reason, to_code, at)``: None if
    that change was not an upgrade to it (a review, an adjustment, or no change at all)."""
    if last_change is None:
        return None
    reason, to_code, at = last_change
    return at if reason == UPGRADE and to_code == code else None
