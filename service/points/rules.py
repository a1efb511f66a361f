"""Points decisions: what a basket earns, how many points it may burn and what they are worth, when a lot
expires. Pure functions over frozen values; "now" is always a parameter.

Earning, per line: ``net / 10**exponent * base_rate * item multiplier * bonus multiplier * tier multiplier``.

- The item multiplier is the SKU's if the program lists the SKU, else the category's, else 1: a SKU multiplier
  is the more specific rule, so it wins (it replaces the category multiplier; they do not stack).
- Bonus events apply while ``starts_at <= occurred_at < ends_at``, to their ``categories`` (all when none are
  listed). Events restricted to ``segments`` (tier codes, quadrants, lifecycles) apply to members who have one of
  them. When
  several events apply to a line, the largest multiplier counts (events do not stack).
- Points are summed unrounded (``Decimal``) over the lines and floored once per transaction.

Burning: a point is worth ``point_value`` minor units; the points may pay at most ``max_burn_percent`` of the
basket's net after the discounts before them. A negative balance blocks burning until repaid.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Context, Decimal
from fractions import Fraction

from service.money import floor, to_decimal
from service.points.errors import InsufficientPoints, PointsOverLimit, SaleEarnsTooMuch

ONE = Decimal(1)
# Points are floored from the exact product of a line's net and its rates: the default context keeps 28 digits,
# and 999.9999999999998 x 1.0000000000000002 rounded there is 1000, a point the member did not earn. Enough
# digits for every factor's (each at most a few dozen, as the program's schemas take them).
EXACT = Context(prec=400)
# The most points one sale may earn: far above any sale a program means, far below what a ledger balance holds
# (2**63), so that rates and multipliers the schemas each accept, multiplied together, never overflow a balance.
MAX_POINTS_PER_SALE = 10**12


@dataclass(frozen=True, slots=True)
class BonusEvent:
    name: str
    starts_at: datetime
    ends_at: datetime
    multiplier: Decimal
    categories: frozenset[str] | None = None
    segments: frozenset[str] | None = None

    def applies(self, category: str, occurred_at: datetime, segments: frozenset[str]) -> bool:
        if not self.starts_at <= occurred_at < self.ends_at:
            return False
        if self.categories is not None and category not in self.categories:
            return False
        return self.segments is None or bool(self.segments & segments)


@dataclass(frozen=True, slots=True)
class EarnRules:
    base_rate: Decimal
    category_multipliers: Mapping[str, Decimal]
    sku_multipliers: Mapping[str, Decimal]
    bonus_events: tuple[BonusEvent, ...]
    exponent: int = 2  # digits of the currency's minor unit

    @classmethod
    def from_config(cls, earn, exponent: int) -> EarnRules:
        """From the program's ``earn`` section (floats in JSON become exact decimals of their written form)."""
        return cls(
            base_rate=to_decimal(earn.base_rate_per_major_unit),
            category_multipliers={k: to_decimal(v) for k, v in earn.category_multipliers.items()},
            sku_multipliers={k: to_decimal(v) for k, v in earn.sku_multipliers.items()},
            bonus_events=tuple(
                BonusEvent(e.name, e.starts_at, e.ends_at, to_decimal(e.multiplier),
                           frozenset(e.categories) if e.categories is not None else None,
                           frozenset(e.segments) if e.segments is not None else None)
                for e in earn.bonus_events),
            exponent=exponent,
        )


@dataclass(frozen=True, slots=True)
class EarnLine:
    line_id: str
    sku: str
    category: str
    net: int


@dataclass(frozen=True, slots=True)
class Earned:
    per_line: Mapping[str, Decimal]  # unrounded
    points: int  # floored once


def item_multiplier(line: EarnLine, rules: EarnRules) -> Decimal:
    if line.sku in rules.sku_multipliers:
        return rules.sku_multipliers[line.sku]
    return rules.category_multipliers.get(line.category, ONE)


def bonus_multiplier(line: EarnLine, rules: EarnRules, occurred_at: datetime,
                     segments: frozenset[str]) -> Decimal:
    active = [e.multiplier for e in rules.bonus_events if e.applies(line.category, occurred_at, segments)]
    return max(active, default=ONE)


def line_points(line: EarnLine, rules: EarnRules, *, tier_multiplier: Decimal, occurred_at: datetime,
                segments: frozenset[str] = frozenset()) -> Decimal:
    points = EXACT.divide(Decimal(line.net), Decimal(10) ** rules.exponent)  # the net in major units
    for factor in (rules.base_rate, item_multiplier(line, rules), bonus_multiplier(line, rules, occurred_at, segments),
                   tier_multiplier):
        points = EXACT.multiply(points, factor)
    return points


def earn(lines: Sequence[EarnLine], rules: EarnRules, *, tier_multiplier: Decimal, occurred_at: datetime,
         segments: frozenset[str] = frozenset()) -> Earned:
    """A basket's points: each line's, summed exactly and floored once."""
    per_line = {line.line_id: line_points(line, rules, tier_multiplier=tier_multiplier, occurred_at=occurred_at,
                                          segments=segments)
                for line in lines}
    total = Decimal(0)
    for points in per_line.values():
        total = EXACT.add(total, points)
    return Earned(per_line, max(floor(total), 0))


@dataclass(frozen=True, slots=True)
class BonusShare:
    """What one bonus event adds to a basket's points."""

    points: int  # floored, as a sale's points are
    outdone: bool  # it applies to a line where another event's multiplier counts instead


def bonus_shares(lines: Sequence[EarnLine], rules: EarnRules, *, tier_multiplier: Decimal, occurred_at: datetime,
                 segments: frozenset[str] = frozenset()) -> tuple[BonusShare, ...]:
    """What each of ``rules.bonus_events`` adds to the basket, in their order. Events do not stack: on each line
    the one whose multiplier counts (the largest; of equal ones, the first in the program's order) adds what the
    line earns over its points without any event, and the others add nothing there. So an event outdone by a
    larger one is worth nothing, two equal ones are not both counted, and the shares add up to the sale's bonus
    exactly: what the sale earns with the events less what it would without, each floored once as the sale's
    points are, shared among the events in proportion to their exact extras (largest remainder, ties to the
    earlier event). Each event's extra floored on its own, a 2x event on a line of 0.50 at a point per 1.00 was
    offered as adding nothing while the sale earned 1 point with it and 0 without (until 2026-12-08)."""
    events = rules.bonus_events
    without = replace(rules, bonus_events=())
    extra = [Decimal(0)] * len(events)
    outdone = [False] * len(events)
    earned_with, earned_without = Decimal(0), Decimal(0)
    for line in lines:
        with_events = line_points(line, rules, tier_multiplier=tier_multiplier, occurred_at=occurred_at,
                                  segments=segments)
        plain = line_points(line, without, tier_multiplier=tier_multiplier, occurred_at=occurred_at, segments=segments)
        earned_with, earned_without = EXACT.add(earned_with, with_events), EXACT.add(earned_without, plain)
        applying = [i for i, event in enumerate(events) if event.applies(line.category, occurred_at, segments)]
        if not applying:
            continue
        counted = max(applying, key=lambda i: (events[i].multiplier, -i))
        extra[counted] = EXACT.add(extra[counted], EXACT.subtract(with_events, plain))
        for i in applying:
            outdone[i] = outdone[i] or i != counted
    bonus = max(floor(earned_with) - floor(earned_without), 0)
    return tuple(BonusShare(points, was_outdone)
                 for points, was_outdone in zip(_shared(bonus, extra), outdone, strict=True))


def _shared(total: int, weights: Sequence[Decimal]) -> list[int]:
    """``total`` whole points shared in proportion to exact ``weights`` (largest remainder, ties to the earlier)."""
    weight = sum(weights, Decimal(0))
    if total == 0 or weight <= 0:
        return [0 for _ in weights]
    exact = [EXACT.divide(EXACT.multiply(Decimal(total), w), weight) for w in weights]
    shares = [floor(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: (shares[i] - exact[i], i))[:total - sum(shares)]:
        shares[i] += 1
    return shares


def check_sale_points(points: int) -> None:
    """A sale may earn at most :data:`MAX_POINTS_PER_SALE` (422 ``sale_earns_too_many_points``): rates,
    multipliers and a tier's, each within its bounds, can multiply past what a balance holds."""
    if points > MAX_POINTS_PER_SALE:
        # The figure goes in the body as a number only where JSON readers take it whole (64 bits; past that the
        # body could not be written at all, and the 422 was a 500); the detail names it in any case.
        figure = {"points": points} if points < 2**63 else {}
        raise SaleEarnsTooMuch(f"This sale would earn {points:,} points, more than the {MAX_POINTS_PER_SALE:,} a sale "
                               "may earn: check the program's earn rate and multipliers.",
                               max_points=MAX_POINTS_PER_SALE, **figure)


def max_burnable_points(net: int, *, max_burn_percent: int, point_value: int) -> int:
    """The most points a basket with this net may burn: ``max_burn_percent`` of the net, in whole points."""
    cap_minor = net * max_burn_percent // 100
    return cap_minor // point_value


def burn_value(points: int, *, balance: int, net: int, max_burn_percent: int, point_value: int) -> int:
    """The discount (minor units) that burning ``points`` gives, or the reason it may not."""
    if points <= 0:
        return 0
    if balance < 0:
        raise InsufficientPoints(
            f"The member owes {-balance} points (points were returned after being spent); points cannot be used "
            "until later purchases repay them.", balance=balance, requested=points)
    if points > balance:
        raise InsufficientPoints(f"The member has {balance} points; {points} were requested.", balance=balance,
                                 requested=points)
    limit = max_burnable_points(net, max_burn_percent=max_burn_percent, point_value=point_value)
    if points > limit:
        raise PointsOverLimit(
            f"At most {limit} points can be used on this basket ({max_burn_percent}% of its net); "
            f"{points} were requested.", max_points=limit, requested=points)
    return points * point_value


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus calendar months, the day clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = at.month - 1 + months
    year, month = at.year + month_index // 12, month_index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def lot_expiry(earned_at: datetime, expiry_months: int | None) -> datetime | None:
    return None if expiry_months is None else add_months(earned_at, expiry_months)


def floor_points(value: Decimal | Fraction) -> int:
    """Whole points, rounded down (never below zero)."""
    return max(floor(value), 0)
