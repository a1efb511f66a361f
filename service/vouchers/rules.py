"""Voucher decisions as pure functions: who a campaign is for, when a voucher is valid, whether it applies to a
basket, what it takes off each line, and which campaigns a sale's spend issues.

A voucher is not a ledger balance (DESIGN §3 keeps the ledger for points, stamps and stored value): it is a
single-use right whose status changes under a row lock; its effect on a sale is a discount on the lines, listed
in the transaction's ``applied`` entries with kind ``voucher``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from service.clock import day_of, told_end
from service.money import allocate, format_amount, round_half_up
from service.personalization.rules import DEFAULT_LOCALE, message

AMOUNT_OFF, PERCENT_OFF, FREE_ITEM = "amount_off", "percent_off", "free_item"
EXPIRY_NUDGE_DAYS = 7


class Text(NamedTuple):
    """Words for a cashier or a member, as a message key and its values (``personalization.rules.MESSAGES``):
    rendered in the member's language on an offer, in English in an error."""

    key: str
    values: dict[str, object]

    def __str__(self) -> str:
        return message(DEFAULT_LOCALE, self.key, **self.values)


@dataclass(frozen=True, slots=True)
class Audience:
    """Who a campaign is for; ``None`` for a dimension means everyone."""

    tiers: frozenset[str] | None = None
    quadrants: frozenset[str] | None = None
    lifecycles: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What the audience looks at. ``quadrant`` and ``lifecycle`` are ``None`` until personalization supplies
    them (the checkout and the issue path fill what they know)."""

    tier: str | None
    quadrant: str | None = None
    lifecycle: str | None = None


def audience_matches(audience: Audience | None, facts: MemberFacts) -> bool:
    """The hook every audience check goes through. A restriction on a fact that is unknown (``None``) does not
    match: a campaign for ``true_friend`` members reaches no one until quadrants are known, never everyone."""
    if audience is None:
        return True
    for allowed, fact in ((audience.tiers, facts.tier), (audience.quadrants, facts.quadrant),
                          (audience.lifecycles, facts.lifecycle)):
        if allowed is not None and fact not in allowed:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    kind: str
    value: int | None  # amount_off: minor units; percent_off: percent (1-100); free_item: cap (None: whole unit)
    min_spend: int = 0
    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    stackable: bool = False
    audience: Audience | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: int | None = None
    per_member_limit: int | None = None
    auto_issue_spend_threshold: int | None = None
    active: bool = True
    created_at: datetime | None = None  # None: as old as any sale (a campaign built in a test)

    def eligible(self, sku: str, category: str) -> bool:
        """Lines a voucher works on: the named SKUs and categories, or every line when none are named."""
        if not self.skus and not self.categories:
            return True
        return sku in self.skus or category in self.categories

    def describe(self, currency: str) -> Text:
        if self.kind == AMOUNT_OFF:
            return Text("voucher_amount_off", {"amount": format_amount(self.value or 0, currency)})
        if self.kind == PERCENT_OFF:
            return Text("voucher_percent_off", {"percent": self.value})
        if self.value is None:
            return Text("voucher_free_item", {})
        return Text("voucher_free_item_up_to", {"amount": format_amount(self.value, currency)})


@dataclass(frozen=True, slots=True)
class Voucher:
    id: str
    code: str
    campaign: Campaign
    member_id: str | None  # None: a bearer code
    status: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def validity(campaign: Campaign, issued_at: datetime) -> tuple[datetime | None, datetime | None]:
    """``(valid_from, valid_until)`` of a voucher issued at ``issued_at``: the campaign's dates, and at most
    ``valid_days`` from issue, or from the campaign's start for a voucher issued before it (counted from the
    issue, a voucher handed out ahead of its campaign ended before it began)."""
    until = campaign.valid_until
    if campaign.valid_days is not None:
        start = issued_at if campaign.valid_from is None else max(issued_at, campaign.valid_from)
        by_days = start + timedelta(days=campaign.valid_days)
        until = by_days if until is None else min(until, by_days)
    return campaign.valid_from, until


def ended(valid_until: datetime | None, now: datetime) -> bool:
    """Whether an end (a voucher's or a campaign's; None: none) has come by ``now``: the end itself is past."""
    return valid_until is not None and valid_until <= now


def can_issue(campaign: Campaign, now: datetime) -> str | None:
    """Why the campaign cannot issue now (None: it can)."""
    if not campaign.active:
        return f"The campaign {campaign.name!r} is not active."
    if ended(campaign.valid_until, now):
        return f"The campaign {campaign.name!r} has ended: it ran until {told_end(campaign.valid_until)}."
    return None


def status_at(status: str, valid_until: datetime | None, now: datetime) -> str:
    """An active voucher past its end is expired, whether or not the sweep has written so yet."""
    if status == "active" and ended(valid_until, now):
        return "expired"
    return status


def over_limit(limit: int | None, current: int, adding: int) -> bool:
    return limit is not None and current + adding > limit


@dataclass(frozen=True, slots=True)
class Item:
    """One basket line as the vouchers see it: its net after the earlier steps and its units not yet free."""

    line_id: str
    sku: str
    category: str
    unit_price: int
    paid_units: int
    net: int
    # What the line's free units were still to cost, at the unit price: a punch-card reward or a free-item voucher
    # with a cap leaves part of its unit to pay, and that part of the net is not the paid units'.
    free_rest: int = 0


@dataclass(frozen=True, slots=True)
class Discount:
    per_line: Mapping[str, int] = field(default_factory=dict)
    free_units: Mapping[str, int] = field(default_factory=dict)
    free_rest: Mapping[str, int] = field(default_factory=dict)  # what a capped free unit leaves, at the unit price

    @property
    def total(self) -> int:
        return sum(self.per_line.values())


def _eligible(campaign: Campaign, items: Sequence[Item]) -> list[Item]:
    return [i for i in items if campaign.eligible(i.sku, i.category) and i.net > 0]


def unit_value(item: Item) -> int:
    """What one paid unit of the line still costs, rounded half up: its share of the net, which the paid units
    share with what the free units were left to cost (``free_rest``), each weighed at the unit price. Without such
    a rest, the net shared evenly over the paid units. A unit never takes what a capped reward left to pay on
    another (a unit of 5.00 beside one that a reward capped at 2.50 left 2.50 of is worth 5.00, not 7.50)."""
    weight = item.unit_price * item.paid_units + item.free_rest
    if item.paid_units <= 0 or weight <= 0:
        return 0
    return min(round_half_up(Decimal(item.net) * item.unit_price / weight), item.net)


def free_rest(unit_price: int, value: int, amount: int) -> int:
    """What a unit worth ``value`` (minor units, after the earlier discounts) is left to cost, at the unit price,
    once ``amount`` of it is made free (half up): the weight its rest keeps in :func:`unit_value`."""
    if value <= 0 or amount >= value:
        return 0
    return round_half_up(Decimal(unit_price) * (value - amount) / value)


def discount(campaign: Campaign, items: Sequence[Item]) -> Discount:
    """What the campaign takes off, per line. ``amount_off``: its value, at most the eligible lines' net, spread
    over the eligible lines in proportion to their net so the parts add up exactly
    (:func:`service.money.allocate`); ``percent_off``: the percent of each eligible line's net, rounded half up
    once per line (DESIGN §4, as the tier discount), so a till that prices line by line gets the same figure;
    ``free_item``: the cheapest eligible paid unit, up to the cap."""
    eligible = _eligible(campaign, items)
    if not eligible:
        return Discount()
    if campaign.kind == FREE_ITEM:
        candidates = [i for i in eligible if i.paid_units > 0]
        if not candidates:
            return Discount()
        item = min(candidates, key=lambda i: (unit_value(i), i.line_id))
        value = unit_value(item)
        amount = value if campaign.value is None else min(value, campaign.value)
        if amount <= 0:
            return Discount()
        rest = free_rest(item.unit_price, value, amount)
        return Discount({item.line_id: amount}, {item.line_id: 1}, {item.line_id: rest} if rest else {})
    if campaign.kind == AMOUNT_OFF:
        nets = [i.net for i in eligible]
        shares = allocate(min(campaign.value or 0, sum(nets)), nets)
    else:
        percent = campaign.value or 0
        shares = [min(round_half_up(Decimal(i.net) * percent / 100), i.net) for i in eligible]
    return Discount({i.line_id: s for i, s in zip(eligible, shares, strict=True) if s > 0})


def why_not_usable(voucher: Voucher, *, member_id: str, facts: MemberFacts, now: datetime,
                   timezone: str | None = None) -> Text | None:
    """Why this member cannot use this (unexpired, unused) voucher now whatever the basket: another member's, not
    valid yet, outside its campaign's audience; None when some basket could take it. What the app's offers check
    (they have no basket); :func:`why_not` checks it first, so the till and the app refuse alike."""
    campaign = voucher.campaign
    code = voucher.code
    if voucher.member_id is not None and voucher.member_id != member_id:
        return Text("voucher_reason_owner", {"code": code})
    if voucher.valid_from is not None and voucher.valid_from > now:
        return Text("voucher_reason_not_yet", {"code": code, "date": day_of(voucher.valid_from, timezone).isoformat()})
    if not audience_matches(campaign.audience, facts):
        return Text("voucher_reason_audience", {"code": code, "name": campaign.name})
    return None


def why_not(voucher: Voucher, *, member_id: str, facts: MemberFacts, items: Sequence[Item], basket_net: int,
            now: datetime, currency: str, timezone: str | None = None) -> Text | None:
    """Why this (valid, unused) voucher does not apply to this member's basket, in words a cashier can read out;
    None when it does. ``basket_net``: the whole basket's net before any voucher (what ``min_spend`` needs);
    ``timezone``: the store's, whose calendar the dates are told in (UTC without one)."""
    reason = why_not_usable(voucher, member_id=member_id, facts=facts, now=now, timezone=timezone)
    if reason is not None:
        return reason
    campaign = voucher.campaign
    code, name = voucher.code, campaign.name
    if basket_net < campaign.min_spend:
        return Text("voucher_reason_min_spend", {"code": code, "min_spend": format_amount(campaign.min_spend, currency),
                                                 "net": format_amount(basket_net, currency)})
    if not _eligible(campaign, items) or discount(campaign, items).total == 0:
        return Text("voucher_reason_no_item", {"code": code, "name": name})
    return None


@dataclass(frozen=True, slots=True)
class Applied:
    voucher: Voucher
    discount: Discount


@dataclass(frozen=True, slots=True)
class Refusal:
    voucher: Voucher
    reason: str


def apply(vouchers: Sequence[Voucher], *, member_id: str, facts: MemberFacts, items: Sequence[Item], now: datetime,
          currency: str, held: Mapping[str, int] | None = None, timezone: str | None = None) -> list[Applied] | Refusal:
    """Apply the vouchers in request order, each to the basket as the earlier ones left it; at most one may be
    non-stackable. The first voucher that does not apply is refused (the whole request is).

    ``held``: how many vouchers of each campaign the member already holds or used; a bearer code makes one more
    (it becomes the member's), so it is refused when that passes the campaign's ``per_member_limit``."""
    basket_net = sum(i.net for i in items)
    current = list(items)
    applied: list[Applied] = []
    exclusive: Voucher | None = None
    counts = dict(held or {})
    for voucher in vouchers:
        if voucher.member_id is None:
            campaign = voucher.campaign
            counts[campaign.id] = counts.get(campaign.id, 0) + 1
            if over_limit(campaign.per_member_limit, counts[campaign.id] - 1, 1):
                return Refusal(voucher, f"Voucher {voucher.code}: this member has already had "
                                        f"{counts[campaign.id] - 1} vouchers of {campaign.name!r} (at most "
                                        f"{campaign.per_member_limit} per member).")
        if not voucher.campaign.stackable:
            if exclusive is not None:
                return Refusal(voucher, f"Voucher {voucher.code} cannot be combined with voucher {exclusive.code}: "
                                        "only one non-stackable voucher can be used per sale.")
            exclusive = voucher
        reason = why_not(voucher, member_id=member_id, facts=facts, items=current, basket_net=basket_net, now=now,
                         currency=currency, timezone=timezone)
        if reason is not None:
            return Refusal(voucher, str(reason))
        result = discount(voucher.campaign, current)
        applied.append(Applied(voucher, result))
        current = [Item(i.line_id, i.sku, i.category, i.unit_price,
                        i.paid_units - result.free_units.get(i.line_id, 0), i.net - result.per_line.get(i.line_id, 0),
                        i.free_rest + result.free_rest.get(i.line_id, 0))
                   for i in current]
    return applied


def withdrawn_by_return(earned: Sequence[tuple[str, int | None]], spend_left: int) -> list[str]:
    """Of the vouchers ``(id, threshold)`` a sale earned by its spend, those its returns (or its void: nothing
    left) take back: each whose threshold the sale's qualifying spend, after every return of it, no longer reaches
    (as a return revokes an unused punch card reward the returned stamps had earned), and every one once nothing
    is left, as a void takes them. The threshold is the one the sale reached, kept on the voucher: a campaign's
    threshold raised since does not let a 1.00 return take back a voucher the sale still earns (None: one issued
    before migration 0021 by a campaign that had stopped issuing, judged by nothing left only)."""
    return [voucher_id for voucher_id, threshold in earned
            if spend_left <= 0 or (threshold is not None and spend_left < threshold)]


def auto_issued(campaigns: Sequence[Campaign], net_spend: int, facts: MemberFacts, *, earned_at: datetime,
                now: datetime) -> list[Campaign]:
    """The threshold campaigns a sale of ``net_spend`` issues a voucher of ("spend 100, get 5"): one voucher per
    campaign whose threshold the sale's net reaches, for members in its audience.

    A sale earns as at the time it was made (``earned_at``, its ``occurred_at``: earlier than ``now`` for a till
    back online or a history imported), as its points do: the campaign must have existed and been able to issue
    then, and the voucher's validity counts from then (:func:`validity`). One that would already have ended by
    ``now`` is not issued: there would be nothing to use, and it would count against the campaign's limits. So a
    history replayed with a campaign of 30-day vouchers running gives vouchers to its last 30 days' sales only,
    not a live voucher to every member who ever crossed the threshold. A campaign set up ahead of its
    ``valid_from`` ("spend 100 in December") rewards sales from that start on, not the sales before it."""
    return [c for c in campaigns
            if c.auto_issue_spend_threshold is not None and net_spend >= c.auto_issue_spend_threshold
            and (c.created_at is None or c.created_at <= earned_at)
            and (c.valid_from is None or c.valid_from <= earned_at) and can_issue(c, earned_at) is None
            and not ended(validity(c, earned_at)[1], now) and audience_matches(c.audience, facts)]


def expiring_soon(vouchers: Sequence[Voucher], now: datetime) -> list[Voucher]:
    """Usable vouchers whose end falls within :data:`EXPIRY_NUDGE_DAYS` (for nudges)."""
    horizon = now + timedelta(days=EXPIRY_NUDGE_DAYS)
    return [v for v in vouchers if v.valid_until is not None and now < v.valid_until <= horizon]


def expiry_order(valid_until: datetime | None, code: str) -> tuple:
    """Sort key: soonest end first, vouchers without an end last, then by code."""
    return (valid_until is None, valid_until or datetime.max, code)


def soonest_expiring_first(vouchers: Sequence[Voucher]) -> list[Voucher]:
    return sorted(vouchers, key=lambda v: expiry_order(v.valid_until, v.code))
