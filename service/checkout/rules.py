"""The checkout's decisions: a basket goes through the incentives in DESIGN §4's order, each contributing its
effect (line discounts, what it lists as applied, the ledger movements a commit posts) through one interface,
:class:`Incentive`. Then the earners look at the final basket. Quote and commit run the very same pipeline;
only commit posts the movements.

Order (DESIGN §4): 1. punch-card rewards, 2. tier discount, 3. vouchers, 4. points burned, 5. stored value as a
tender. Earning follows on the net after steps 1-4. Steps 1, 3 and 5 arrive with their domains: each is one more
:class:`Incentive` in :data:`INCENTIVES`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from service.checkout.errors import OccurredAtOutOfRange, ReturnExceedsPurchase, UnknownLine
from service.giftcards import rules as giftcard_rules
from service.ledger.errors import InsufficientFunds
from service.ledger.rules import GIFT_CARD, POINTS, LotPolicy, Movement, gift_card_key
from service.money import allocate, refund_in_proportion, round_half_up, to_decimal
from service.points import rules as points_rules
from service.program.rules import tier_code_of
from service.punchcards import rules as punch_rules
from service.punchcards.errors import NoEligibleItem
from service.vouchers import rules as voucher_rules
from service.vouchers.errors import VoucherNotApplicable
from service.wallet import rules as wallet_rules
from service.wallet.errors import WalletExceedsPayable

POS_BACKDATE_LIMIT = timedelta(hours=72)
FUTURE_TOLERANCE = timedelta(minutes=5)
# The member's accounts every sale locks, whatever its basket (with the accounts of the punch cards it stamps);
# enrolment opens them (members.service.enroll), so that a first sale finds them.
EVERY_SALE_LOCKS = (POINTS, *wallet_rules.WALLET_KINDS)


@dataclass(frozen=True, slots=True)
class Line:
    line_id: str
    sku: str
    category: str
    quantity: int
    unit_price: int
    discount: int = 0
    free_units: int = 0  # units an earlier step made free (they earn no stamp and cannot be made free again)
    free_rest: int = 0  # what those units were still to cost, at the unit price (a capped reward leaves a part)

    @property
    def subtotal(self) -> int:
        return self.quantity * self.unit_price

    @property
    def net(self) -> int:
        return self.subtotal - self.discount


@dataclass(frozen=True, slots=True)
class Basket:
    lines: tuple[Line, ...]

    @property
    def subtotal(self) -> int:
        return sum(line.subtotal for line in self.lines)

    @property
    def discount(self) -> int:
        return sum(line.discount for line in self.lines)

    @property
    def net(self) -> int:
        return sum(line.net for line in self.lines)

    def discounted(self, discounts: Mapping[str, int], free_units: Mapping[str, int] | None = None,
                   free_rest: Mapping[str, int] | None = None) -> Basket:
        """The basket with these further discounts (and free units) per line id; this basket itself when a step
        changes nothing, as most steps of most sales do (a basket is immutable)."""
        if not (discounts or free_units or free_rest):
            return self
        free_units, free_rest = free_units or {}, free_rest or {}
        return Basket(tuple(
            Line(line.line_id, line.sku, line.category, line.quantity, line.unit_price,
                 line.discount + discounts.get(line.line_id, 0), line.free_units + free_units.get(line.line_id, 0),
                 line.free_rest + free_rest.get(line.line_id, 0))
            for line in self.lines))


@dataclass(frozen=True, slots=True)
class ProgramRules:
    currency: str
    point_value: int
    max_burn_percent: int
    earn: points_rules.EarnRules
    expiry_months: int | None


@dataclass(frozen=True, slots=True)
class MemberState:
    id: str
    tier: str
    tier_multiplier: Decimal
    tier_discount_percent: Decimal
    points_balance: int
    segments: frozenset[str] = frozenset()  # tier code, quadrant, lifecycle: what bonus events target
    wallet_cash: int = 0
    wallet_bonus: int = 0


@dataclass(frozen=True, slots=True)
class Redemptions:
    points: int = 0
    wallet_amount: int = 0
    punch_rewards: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PunchState:
    """What the punch cards bring to a checkout: the programs that stamp, the member's stamp balances (by
    program id) and the rewards the request redeems (already checked to be the member's and available)."""

    programs: tuple[punch_rules.Program, ...] = ()
    balances: Mapping[str, int] = field(default_factory=dict)
    claims: tuple[punch_rules.Claim, ...] = ()


@dataclass(frozen=True, slots=True)
class VoucherState:
    """What the vouchers bring to a checkout: the vouchers the request redeems, in request order (already
    checked to exist, be unused and be valid now), what their audiences look at, and the time they are used."""

    claims: tuple[voucher_rules.Voucher, ...] = ()
    facts: voucher_rules.MemberFacts = field(default_factory=lambda: voucher_rules.MemberFacts(tier=None))
    now: datetime | None = None
    held: Mapping[str, int] = field(default_factory=dict)  # campaign id -> vouchers of it the member holds
    timezone: str | None = None  # the store's: the calendar a refusal's dates are told in


@dataclass(frozen=True, slots=True)
class Context:
    program: ProgramRules
    member: MemberState
    redeem: Redemptions
    occurred_at: datetime
    tendered: int = 0  # what earlier tenders already pay of the net
    punch: PunchState = field(default_factory=PunchState)
    gift_cards: tuple[giftcard_rules.Tender, ...] = ()  # the cards handed over, PINs checked, balances locked
    vouchers: VoucherState = field(default_factory=VoucherState)


@dataclass(frozen=True, slots=True)
class Applied:
    kind: str
    amount: int
    line_id: str | None = None
    id: str | None = None
    points: int | None = None


@dataclass(frozen=True, slots=True)
class Effect:
    """What one incentive does to the basket: discounts per line (minor units), the entries it lists as
    applied, the ledger movements a commit posts for it, the units it made free (they earn no stamp) with what
    a cap left them to cost (at the unit price) and, for a tender, how much of ``payable`` it pays."""

    discounts: Mapping[str, int] = field(default_factory=dict)
    applied: tuple[Applied, ...] = ()
    movements: tuple[Movement, ...] = ()
    tender: int = 0
    free_units: Mapping[str, int] = field(default_factory=dict)
    free_rest: Mapping[str, int] = field(default_factory=dict)


class Incentive(Protocol):
    """One kind of incentive, priced against the basket as the earlier ones left it."""

    kind: str

    def price(self, basket: Basket, ctx: Context) -> Effect:
        """This incentive's effect on ``basket`` (as the earlier incentives left it). Pure: no I/O, no clock;
        raises a typed error when the request asks for what it cannot have."""


def punch_units(basket: Basket) -> list[punch_rules.Unit]:
    return [punch_rules.Unit(line.line_id, line.sku, line.category, line.quantity, line.unit_price)
            for line in basket.lines]


class PunchRewards:
    """Step 1: each redeemed punch-card reward makes the cheapest eligible unit free, up to the reward's cap."""

    kind = "punch_reward"

    def price(self, basket: Basket, ctx: Context) -> Effect:
        claims = ctx.punch.claims
        if not claims:
            return Effect()
        result = punch_rules.free_units(punch_units(basket), claims)
        unusable = punch_rules.unusable_claims(claims, result)
        if unusable:
            claim = unusable[0]
            raise NoEligibleItem(f"Nothing in the basket can be made free by the {claim.program.name} reward "
                                 f"{claim.reward_id!r}.", reward_id=claim.reward_id)
        applied = tuple(Applied(self.kind, f.amount, line_id=f.line_id, id=f.reward_id) for f in result.freed)
        # A reward capped below its unit's price leaves the rest of the unit to pay: not a paid unit's to give away.
        # Step 1 prices units at their unit price, so the value a reward takes from is that price.
        prices = {line.line_id: line.unit_price for line in basket.lines}
        rest: dict[str, int] = defaultdict(int)
        for f in result.freed:
            rest[f.line_id] += voucher_rules.free_rest(prices[f.line_id], prices[f.line_id], f.amount)
        return Effect(discounts=result.discounts, applied=applied, free_units=result.units,
                      free_rest={line_id: n for line_id, n in rest.items() if n > 0})


class TierDiscount:
    """Step 2: the member's tier ``discount_percent`` off every line, rounded half up per line."""

    kind = "tier_discount"

    def price(self, basket: Basket, ctx: Context) -> Effect:
        discounts = tier_discounts(basket, ctx.member.tier_discount_percent)
        applied = tuple(Applied(self.kind, amount, line_id=line_id, id=ctx.member.tier)
                        for line_id, amount in discounts.items())
        return Effect(discounts=discounts, applied=applied)


def tier_discounts(basket: Basket, percent: Decimal) -> dict[str, int]:
    """``percent`` off every line's net, rounded half up per line (the lines it leaves unchanged left out)."""
    if percent <= 0:
        return {}
    discounts = {line.line_id: min(round_half_up(Decimal(line.net) * percent / 100), line.net)
                 for line in basket.lines}
    return {k: v for k, v in discounts.items() if v > 0}


def voucher_items(basket: Basket) -> list[voucher_rules.Item]:
    return [voucher_rules.Item(line.line_id, line.sku, line.category, line.unit_price,
                               line.quantity - line.free_units, line.net, line.free_rest) for line in basket.lines]


class VoucherDiscount:
    """Step 3: the vouchers the request redeems, in request order, each on the basket as the earlier ones left it
    (at most one non-stackable): amount off or percent off the eligible lines (spread over them so the parts add
    up exactly), or the cheapest eligible unit free."""

    kind = "voucher"

    def price(self, basket: Basket, ctx: Context) -> Effect:
        claims = ctx.vouchers.claims
        if not claims:
            return Effect()
        result = voucher_rules.apply(claims, member_id=ctx.member.id, facts=ctx.vouchers.facts,
                                     items=voucher_items(basket), now=ctx.vouchers.now or ctx.occurred_at,
                                     currency=ctx.program.currency, held=ctx.vouchers.held,
                                     timezone=ctx.vouchers.timezone)
        if isinstance(result, voucher_rules.Refusal):
            raise VoucherNotApplicable(result.reason, voucher_code=result.voucher.code)
        discounts: dict[str, int] = defaultdict(int)
        free: dict[str, int] = defaultdict(int)
        rest: dict[str, int] = defaultdict(int)
        applied = []
        for used in result:
            for line_id, amount in used.discount.per_line.items():
                discounts[line_id] += amount
                applied.append(Applied(self.kind, amount, line_id=line_id, id=used.voucher.id))
            for line_id, units in used.discount.free_units.items():
                free[line_id] += units
            for line_id, n in used.discount.free_rest.items():
                rest[line_id] += n
        return Effect(discounts=dict(discounts), applied=tuple(applied), free_units=dict(free), free_rest=dict(rest))


class PointsBurn:
    """Step 4: points as a discount worth ``point_value`` minor units each, spread over the lines in proportion
    to their net; capped by ``max_burn_percent`` of the net after the earlier discounts."""

    kind = "points"

    def price(self, basket: Basket, ctx: Context) -> Effect:
        points = ctx.redeem.points
        value = points_rules.burn_value(points, balance=ctx.member.points_balance, net=basket.net,
                                        max_burn_percent=ctx.program.max_burn_percent,
                                        point_value=ctx.program.point_value)
        if value == 0:
            return Effect()
        shares = allocate(value, [line.net for line in basket.lines])
        discounts = {line.line_id: share for line, share in zip(basket.lines, shares, strict=True) if share > 0}
        movement = Movement(account=POINTS, asset=POINTS, amount=-points, contra="program:points_redeemed",
                            kind="burn", lots=LotPolicy.FIFO)
        return Effect(discounts=discounts, applied=(Applied(self.kind, value, points=points),), movements=(movement,))


class WalletTender:
    """Step 5: the member's wallet as a tender after every discount. It pays at most what is still payable and is
    spent from the cash and bonus parts in proportion to their balances; it does not change the lines, so the
    wallet-paid spend earns points and counts as qualifying spend."""

    kind = "wallet"

    def price(self, basket: Basket, ctx: Context) -> Effect:
        amount = ctx.redeem.wallet_amount
        if amount == 0:
            return Effect()
        payable = basket.net - ctx.tendered
        if amount > payable:
            raise WalletExceedsPayable(f"The wallet can pay at most what is owed ({payable}); {amount} was asked.",
                                       payable=payable)
        held = ctx.member.wallet_cash + ctx.member.wallet_bonus
        if amount > held:
            raise InsufficientFunds(f"The wallet holds {held}; {amount} is needed.", balance=held)
        split = wallet_rules.split_payment(amount, cash=ctx.member.wallet_cash, bonus=ctx.member.wallet_bonus)
        movements = tuple(
            Movement(account=account, asset=account, amount=-part, contra=contra, kind="wallet_pay")
            for account, part, contra in ((wallet_rules.WALLET_CASH, split.cash, wallet_rules.SPENT),
                                          (wallet_rules.WALLET_BONUS, split.bonus, wallet_rules.BONUS_SPENT))
            if part > 0)
        return Effect(applied=(Applied(self.kind, amount),), movements=movements, tender=amount)


class GiftCardTender:
    """Step 5, after the wallet: gift cards as tenders, in the order they were handed over, each paying what is
    asked of it or else what it holds, never more than what is still payable (the card keeps the rest). Like the
    wallet, it does not change the lines: gift-card-paid spend earns points and counts as qualifying spend."""

    kind = "gift_card"

    def price(self, basket: Basket, ctx: Context) -> Effect:
        if not ctx.gift_cards:
            return Effect()
        plan = [(card_id, amount) for card_id, amount in
                giftcard_rules.plan_payment(ctx.gift_cards, basket.net - ctx.tendered) if amount > 0]
        movements = tuple(Movement(account=gift_card_key(card_id), asset=GIFT_CARD, amount=-amount,
                                   contra=giftcard_rules.SPENT, kind="gift_card_pay") for card_id, amount in plan)
        return Effect(applied=tuple(Applied(self.kind, amount, id=card_id) for card_id, amount in plan),
                      movements=movements, tender=sum(amount for _, amount in plan))


# DESIGN §4 steps 1-5, in order.
INCENTIVES: tuple[Incentive, ...] = (PunchRewards(), TierDiscount(), VoucherDiscount(), PointsBurn(), WalletTender(),
                                     GiftCardTender())
VOUCHER_STEP = 2  # the index of VoucherDiscount: what comes before it prices the basket vouchers see


@dataclass(frozen=True, slots=True)
class Priced:
    basket: Basket
    applied: tuple[Applied, ...]
    movements: tuple[Movement, ...]
    discounts_by_kind: Mapping[str, Mapping[str, int]]
    points_burned: int
    points_earned: int
    line_points: Mapping[str, Decimal]
    qualifying_spend: int
    tenders: Mapping[str, int] = field(default_factory=dict)

    @property
    def tendered(self) -> int:
        return sum(self.tenders.values())
    free_units: Mapping[str, int] = field(default_factory=dict)
    stamps: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # program id -> line id -> stamps
    rewards_due: Mapping[str, int] = field(default_factory=dict)  # program id -> rewards to issue

    def stamps_by_program(self) -> dict[str, int]:
        return {program_id: sum(per_line.values()) for program_id, per_line in self.stamps.items()}

    def line_points_burned(self, line_id: str, point_value: int) -> Decimal:
        return Decimal(self.discounts_by_kind.get(PointsBurn.kind, {}).get(line_id, 0)) / point_value

    @property
    def tier_discount(self) -> int:
        """What step 2, the tier discount, took off the basket (on the lines as the punch rewards left them)."""
        return sum(self.discounts_by_kind.get(TierDiscount.kind, {}).values())

    @property
    def burnable_net(self) -> int:
        """The net as steps 1-3 left it (punch rewards, tier discount, vouchers, as the request redeems them):
        what ``max_burn_percent`` caps the points on (step 4). The burn's own discount is added back; the tenders
        after it change no line."""
        return self.basket.net + sum(self.discounts_by_kind.get(PointsBurn.kind, {}).values())


def price(basket: Basket, ctx: Context, incentives: Sequence[Incentive] = INCENTIVES) -> Priced:
    applied: list[Applied] = []
    movements: list[Movement] = []
    by_kind: dict[str, Mapping[str, int]] = {}
    tenders: dict[str, int] = {}
    free: dict[str, int] = {}
    for incentive in incentives:
        tendered = sum(tenders.values())
        if tendered != ctx.tendered:
            ctx = replace(ctx, tendered=tendered)
        effect = incentive.price(basket, ctx)
        if effect.tender:
            tenders[incentive.kind] = effect.tender
        basket = basket.discounted(effect.discounts, effect.free_units, effect.free_rest)
        applied.extend(effect.applied)
        movements.extend(effect.movements)
        by_kind[incentive.kind] = effect.discounts
        for line_id, units in effect.free_units.items():
            free[line_id] = free.get(line_id, 0) + units
    earned = points_rules.earn(
        [points_rules.EarnLine(line.line_id, line.sku, line.category, line.net) for line in basket.lines],
        ctx.program.earn, tier_multiplier=ctx.member.tier_multiplier, occurred_at=ctx.occurred_at,
        segments=ctx.member.segments)
    points_rules.check_sale_points(earned.points)
    if earned.points > 0:
        movements.append(Movement(
            account=POINTS, asset=POINTS, amount=earned.points, contra="program:points_issued", kind="earn",
            lots=LotPolicy.NEW, earned_at=ctx.occurred_at,
            expires_at=points_rules.lot_expiry(ctx.occurred_at, ctx.program.expiry_months)))
    stamps = punch_rules.stamps_earned(punch_units(basket), free, ctx.punch.programs)
    stamps_total = {program_id: sum(per_line.values()) for program_id, per_line in stamps.items()}
    required = {program.id: program.stamps_required for program in ctx.punch.programs}
    due = {program_id: n for program_id, n in (
        (program_id, punch_rules.rewards_due(ctx.punch.balances.get(program_id, 0), count, required[program_id]))
        for program_id, count in stamps_total.items()) if n > 0}
    movements.extend(punch_rules.stamp_movements(stamps_total, due, required))
    return Priced(basket=basket, applied=tuple(applied), movements=tuple(movements), discounts_by_kind=by_kind,
                  points_burned=ctx.redeem.points, points_earned=earned.points, line_points=earned.per_line,
                  qualifying_spend=basket.net, tenders=tenders, free_units=free, stamps=stamps,
                  rewards_due=due)


def before_vouchers(basket: Basket, ctx: Context) -> Basket:
    """The basket as the steps before the vouchers leave it (what a voucher offer is valued against)."""
    for incentive in INCENTIVES[:VOUCHER_STEP]:
        effect = incentive.price(basket, ctx)
        basket = basket.discounted(effect.discounts, effect.free_units, effect.free_rest)
    return basket


def tier_figures(tiers: Sequence, tier_code: str | None) -> tuple[str, Decimal, Decimal]:
    """``(code, earn multiplier, discount percent)`` of the member's tier (``program.rules.tier_code_of``: the
    first tier when the member has none or one the program no longer has)."""
    code = tier_code_of(tiers, tier_code)
    tier = next(t for t in tiers if t.code == code)
    return tier.code, to_decimal(tier.earn_multiplier), to_decimal(tier.discount_percent)


def check_occurred_at(occurred_at: datetime, now: datetime, *, is_admin: bool) -> None:
    """Never more than 5 minutes ahead; a till may back-date at most 72 hours (sales made offline); an admin
    may import any past sale."""
    if occurred_at > now + FUTURE_TOLERANCE:
        raise OccurredAtOutOfRange("occurred_at is in the future; check the till's clock (at most 5 minutes "
                                   "ahead is accepted).")
    if not is_admin and occurred_at < now - POS_BACKDATE_LIMIT:
        raise OccurredAtOutOfRange("occurred_at is more than 72 hours ago; older sales must be imported by an "
                                   "administrator.")


@dataclass(frozen=True, slots=True)
class SoldLine:
    """A line of a sale as a return sees it. Its points are exact: what it earned (a terminating decimal, as
    ``points.rules.line_points`` makes it) and what was burned on it (:func:`burned_by_line`, a third of a point
    where the point is worth 3 and the line took 10 off)."""

    line_id: str
    quantity: int
    net: int
    points_earned: Decimal | Fraction
    points_burned: Decimal | Fraction


def burned_by_line(discounts: Mapping[str, int], points_burned: int) -> dict[str, Fraction]:
    """The sale's ``points_burned`` shared among its lines exactly, in proportion to the points discount each line
    took (``{line id: points}``). Kept on the receipt as a decimal of 28 digits, a third came back as
    0.333...3, and three of them summed and floored gave 9 points back for 10 burned."""
    total = sum(discounts.values())
    return {line_id: Fraction(discount * points_burned, total) if total else Fraction(0)
            for line_id, discount in discounts.items()}


@dataclass(frozen=True, slots=True)
class ReturnTotals:
    """What all returns of a transaction have reversed so far."""

    points_clawed_back: int = 0
    points_refunded: int = 0
    qualifying_spend: int = 0


@dataclass(frozen=True, slots=True)
class ReturnPlan:
    points_clawed_back: int
    points_refunded: int
    qualifying_spend: int
    fully_returned: bool


def stored_value_refund(paid: Mapping[str, int], refunded_before: Mapping[str, int], *, net: int,
                        returned_net: int, fully: bool) -> dict[str, int]:
    """What a return gives back to each part of stored value that paid the sale (``{part: amount}``; the wallet's
    cash and bonus, each gift card; ties of rounding go to the parts named first): one refund for all of them,
    the stored-value share of everything returned so far less what earlier returns gave back
    (:func:`service.money.refund_in_proportion`). Rounded for each part on its own, a unit of 1 paid half from
    the wallet and half by card would give back 1 to each."""
    parts = list(paid)
    back = refund_in_proportion([paid[p] for p in parts], [refunded_before.get(p, 0) for p in parts], net=net,
                                returned_net=returned_net, fully=fully)
    return {part: amount for part, amount in zip(parts, back, strict=True) if amount}


def _returned_share(sold: Sequence[SoldLine], returned: Mapping[str, int],
                    value: Callable[[SoldLine], int | Decimal | Fraction]) -> Fraction:
    """The part of the lines' ``value`` the ``returned`` units carry, exactly (a third is a third, not 0.333...3)."""
    return sum((Fraction(value(line)) * returned[line.line_id] / line.quantity for line in sold), Fraction(0))


def plan_return(sold: Sequence[SoldLine], returned: Mapping[str, int], requested: Mapping[str, int], *,
                points_earned: int, points_burned: int, before: ReturnTotals) -> ReturnPlan:
    """Reverse the returned units proportionally. Each figure is computed for everything returned so far
    (earlier returns plus this one) and this return takes the difference, so that repeated partial returns add up
    to exactly the transaction's figures when everything has come back. Earned points clawed back round down
    (in the member's favour), and so do refunded burned points (rounded up, a point worth 1.00 burned on two
    units of 3.00 would come back whole with the first: 1.00 more than the unit carried); spend rounds half up.
    Each is summed exactly over the lines and rounded once.
    What rounding holds back comes back with the last unit."""
    by_id = {line.line_id: line for line in sold}
    for line_id, quantity in requested.items():
        line = by_id.get(line_id)
        if line is None:
            raise UnknownLine(f"The transaction has no line {line_id!r}.", line_id=line_id)
        left = line.quantity - returned.get(line_id, 0)
        if quantity > left:
            raise ReturnExceedsPurchase(
                f"Line {line_id!r}: {quantity} returned but only {left} of {line.quantity} can still be returned.",
                line_id=line_id, returnable=left)
    after = {line.line_id: returned.get(line.line_id, 0) + requested.get(line.line_id, 0) for line in sold}
    fully = all(after[line.line_id] == line.quantity for line in sold)
    if fully:
        earned_cum, burned_cum, spend_cum = points_earned, points_burned, sum(line.net for line in sold)
    else:
        # Each figure rounded once for the whole basket: rounded line by line, lines of 2 units netting 1 each,
        # half of every line returned, came to the whole basket's spend (and so did the stored value and the cash
        # refunded from it).
        earned_cum = points_rules.floor_points(_returned_share(sold, after, lambda line: line.points_earned))
        burned_cum = min(points_rules.floor_points(_returned_share(sold, after, lambda line: line.points_burned)),
                         points_burned)
        spend_cum = round_half_up(_returned_share(sold, after, lambda line: line.net))
    earned_cum = min(earned_cum, points_earned)
    return ReturnPlan(
        points_clawed_back=max(earned_cum - before.points_clawed_back, 0),
        points_refunded=max(burned_cum - before.points_refunded, 0),
        qualifying_spend=max(spend_cum - before.qualifying_spend, 0),
        fully_returned=fully,
    )
