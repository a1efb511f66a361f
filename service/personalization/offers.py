"""Ranked offers and nudges for the till (with a basket) and the app (without one).

Each incentive domain contributes through one :class:`OfferProvider` in :data:`PROVIDERS`; the list is ranked
here, once (:func:`service.personalization.rules.rank_key`): what the member can use now (rewards, own vouchers
soonest-expiring first, points), then campaign offers whose audience matches the member. Nudges come in the
providers' order. A new incentive (vouchers) is one more provider in :data:`PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout import rules as checkout_rules
from service.clock import told_end
from service.ledger.rules import POINTS
from service.members.models import Member
from service.money import currency_exponent, format_amount
from service.personalization import rules
from service.personalization.schemas import (
    CampaignOffer,
    MemberOffers,
    Nudge,
    Offer,
    PointsExpiryNudge,
    PointsOffer,
    PunchCardNudge,
    PunchRewardOffer,
    TierDiscountOffer,
    TierNudge,
    VoucherExpiryNudge,
)
from service.points import rules as points_rules
from service.points import service as points_service
from service.program.schemas import ProgramPublic
from service.punchcards import rules as punch_rules
from service.punchcards import service as punch_service
from service.tiers import service as tiers
from service.vouchers import rules as voucher_rules
from service.vouchers import service as voucher_service

T = TypeVar("T")
EXPIRY_NUDGES = 3  # the most lots the points-expiry nudge names


@dataclass(frozen=True)
class OfferContext:
    """What every provider may look at. ``basket`` is None for the app (no basket: an offer is applicable when
    the member can use it at all, and its value is what it is worth at most)."""

    member: Member
    program: ProgramPublic
    locale: str
    now: datetime
    balances: Mapping[str, int]  # the member's ledger balances by account kind
    segments: frozenset[str]  # tier code, quadrant, lifecycle
    basket: checkout_rules.Basket | None = None
    # What the sale earns points on: the basket after every discount (DESIGN §4 steps 1-4), as the commit earns
    # (None: no basket). A bonus event's offer is valued on it.
    earning: checkout_rules.Basket | None = None
    # What vouchers are priced against: the basket's items after the steps before vouchers (None: no basket).
    voucher_items: Sequence[voucher_rules.Item] | None = None
    # What points are capped on: the basket's net after DESIGN §4 steps 1-3 with the punch rewards and vouchers
    # the request redeems, as the commit caps them (None: no basket).
    burnable_net: int | None = None
    # What the tier discount takes off the basket as the quote prices it: DESIGN §4 step 2, on the lines as the
    # punch rewards the request redeems leave them, as the commit takes it (None: no basket).
    tier_discount: int | None = None
    # The tier window's qualifying spend, when the caller has read it (the quote has); read when needed otherwise.
    tier_spend: int | None = None
    # ``(expires_at, points)`` of the member's next lots to expire after ``now``, soonest first (at least
    # EXPIRY_NUDGES of them), when the caller has read them (the quote has); read when needed otherwise.
    expiring_points: Sequence[tuple[datetime, int]] | None = None
    # The time zone whose calendar dates are told in: a till's store's, or the one the app names; None: UTC.
    timezone: str | None = None
    _reads: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    async def once(self, name: str, load: Callable[[], Awaitable[T]]) -> T:
        """``load()``, read once per context: a provider's offers and nudges share what they read."""
        if name not in self._reads:
            self._reads[name] = await load()
        return self._reads[name]

    @property
    def currency(self) -> str:
        return self.program.currency

    def text(self, key: str, **values: object) -> str:
        return rules.message(self.locale, key, **values)


class OfferProvider(Protocol):
    async def offers(self, session: AsyncSession, ctx: OfferContext) -> list[Offer]: ...

    async def nudges(self, session: AsyncSession, ctx: OfferContext) -> list[Nudge]: ...


class PunchCards:
    """Available rewards, each valued against the basket on its own; nudges one or two stamps short."""

    async def offers(self, session: AsyncSession, ctx: OfferContext) -> list[Offer]:
        offers: list[Offer] = []
        for claim in await punch_service.available_rewards(session, ctx.member.id, ctx.now):
            name = claim.program.name
            if ctx.basket is None:
                offers.append(PunchRewardOffer(id=claim.reward_id, title=ctx.text("punch_title", program=name),
                                               description=ctx.text("punch_description_any"),
                                               value=claim.program.max_value or 0, applicable=True))
                continue
            freed = punch_rules.free_units(checkout_rules.punch_units(ctx.basket), [claim]).freed
            value = freed[0].amount if freed else 0
            offers.append(PunchRewardOffer(
                id=claim.reward_id, title=ctx.text("punch_title", program=name),
                description=ctx.text("punch_description", value=format_amount(value, ctx.currency)) if freed
                else ctx.text("punch_description_any"), value=value, applicable=bool(freed),
                reason=None if freed else ctx.text("punch_reason", program=name)))
        return offers

    async def nudges(self, session: AsyncSession, ctx: OfferContext) -> list[Nudge]:
        nudges: list[Nudge] = []
        for program in await punch_service.active_programs(session):
            missing = punch_rules.missing_stamps(ctx.balances.get(punch_rules.account_kind(program.id), 0),
                                                 program.stamps_required)
            if rules.missing_stamps_worth_a_nudge(missing):
                noun = ctx.text("stamp" if missing == 1 else "stamps")
                nudges.append(PunchCardNudge(text=ctx.text("nudge_stamps", missing=missing, noun=noun,
                                                           program=program.name),
                                             program_id=program.id, missing=missing))
        return nudges


class Points:
    """Redeemable points with their value (for the basket: what ``max_burn_percent`` lets it take of the net the
    punch rewards, the tier discount and the vouchers leave, as the commit counts it: the till may read the offer
    out and commit it); nudges for lots expiring within 30 days."""

    async def offers(self, session: AsyncSession, ctx: OfferContext) -> list[Offer]:
        balance = ctx.balances.get(POINTS, 0)
        if balance == 0:
            return []
        program = ctx.program
        limit = None if ctx.burnable_net is None else points_rules.max_burnable_points(
            ctx.burnable_net, max_burn_percent=program.max_burn_percent, point_value=program.point_value)
        usable = rules.usable_points(balance, max_burn_percent=program.max_burn_percent, basket_limit=limit)
        value = usable * program.point_value
        reason = None
        if balance < 0:
            reason = ctx.text("points_reason_debt", points=-balance)
        elif usable == 0:
            reason = ctx.text("points_reason_basket")
        return [PointsOffer(title=ctx.text("points_title"), points=usable, value=value, applicable=usable > 0,
                            description=ctx.text("points_description", points=usable,
                                                 value=format_amount(value, ctx.currency)), reason=reason)]

    async def nudges(self, session: AsyncSession, ctx: OfferContext) -> list[Nudge]:
        if ctx.balances.get(POINTS, 0) <= 0:
            return []
        horizon = ctx.now + timedelta(days=rules.POINTS_EXPIRY_NUDGE_DAYS)
        expiring = ctx.expiring_points
        if expiring is None:
            expiring = [(e.expires_at, e.amount) for e in
                        await points_service.expiring(session, ctx.member.id, after=ctx.now, limit=EXPIRY_NUDGES)]
        return [PointsExpiryNudge(text=ctx.text("nudge_points_expiry", points=points,
                                                date=told_end(at, ctx.timezone)),
                                  points=points, expires_at=at)
                for at, points in expiring[:EXPIRY_NUDGES] if at <= horizon]


class Tiers:
    """The tier discount as an offer (for the basket: worth what the quote and its commit take off, after the punch
    rewards the request redeems); the spend still needed for the next tier as a nudge."""

    async def offers(self, session: AsyncSession, ctx: OfferContext) -> list[Offer]:
        code, _, percent = checkout_rules.tier_figures(ctx.program.tiers, ctx.member.tier_code)
        if percent <= 0:
            return []
        name = next(t.name for t in ctx.program.tiers if t.code == code)
        value = (ctx.tier_discount or 0) if ctx.basket is not None else 0
        return [TierDiscountOffer(id=code, title=ctx.text("tier_title", tier=name),
                                  description=ctx.text("tier_description", percent=f"{percent.normalize():f}",
                                                       tier=name),
                                  value=value, applicable=value > 0 if ctx.basket is not None else True)]

    async def nudges(self, session: AsyncSession, ctx: OfferContext) -> list[Nudge]:
        spend = ctx.tier_spend
        if spend is None:
            spend = await tiers.qualifying_spend(session, ctx.member.id, ctx.now, ctx.program.tier_window_months)
        found = tiers.nudge(ctx.program, ctx.member.tier_code, spend)
        if found is None:
            return []
        needed, name = found
        return [TierNudge(text=ctx.text("nudge_tier", amount=format_amount(needed, ctx.currency), tier=name),
                          tier=name, amount=needed)]


class Campaigns:
    """Bonus-point events running now whose audience (``segments``: tier codes, quadrants, lifecycles) matches
    the member; for a basket, valued as the extra points its lines would earn by this event. Of several events
    on a line only the largest counts, so one outdone there adds nothing (``points_rules.bonus_shares``)."""

    async def offers(self, session: AsyncSession, ctx: OfferContext) -> list[Offer]:
        offers: list[Offer] = []
        shares = _bonus_shares(ctx.earning, ctx) if ctx.earning is not None else None
        for index, event in enumerate(ctx.program.earn.bonus_events):
            if not event.starts_at <= ctx.now < event.ends_at or not rules.audience_matches(event.segments,
                                                                                            ctx.segments):
                continue
            what = ", ".join(event.categories) if event.categories else ctx.text("campaign_everything")
            description = ctx.text("campaign_description", multiplier=f"{event.multiplier:g}", what=what,
                                   until=told_end(event.ends_at, ctx.timezone))
            value, applicable, reason = 0, True, None
            if shares is not None:
                share = shares[index]
                applicable = share.points > 0
                value = share.points * ctx.program.point_value
                if not applicable:
                    reason = ctx.text("campaign_reason_outdone" if share.outdone else "campaign_reason",
                                      name=event.name)
            offers.append(CampaignOffer(id=event.name, title=ctx.text("campaign_title", name=event.name),
                                        description=description, value=value, applicable=applicable,
                                        ends_at=event.ends_at, reason=reason))
        return offers

    async def nudges(self, session: AsyncSession, ctx: OfferContext) -> list[Nudge]:
        return []


def _bonus_shares(earning: checkout_rules.Basket, ctx: OfferContext) -> tuple[points_rules.BonusShare, ...]:
    """What each of the program's bonus events adds to what the basket earns, in the program's order: on its lines
    after every discount, as the commit earns (until 2026-12-08 on the lines before any discount, so a gold
    member's 5 % off, a voucher or points burned made the offer worth more than the sale's bonus)."""
    earn = points_rules.EarnRules.from_config(ctx.program.earn, currency_exponent(ctx.currency))
    lines = [points_rules.EarnLine(line.line_id, line.sku, line.category, line.net) for line in earning.lines]
    _, multiplier, _ = checkout_rules.tier_figures(ctx.program.tiers, ctx.member.tier_code)
    return points_rules.bonus_shares(lines, earn, tier_multiplier=multiplier, occurred_at=ctx.now,
                                     segments=ctx.segments)


class Vouchers:
    """The member's own unexpired vouchers (ranked soonest-expiring first), each valued against this basket (one
    not valid yet, or outside its audience, is listed as not applicable with the reason); nudges for those that
    end within a week."""

    async def offers(self, session: AsyncSession, ctx: OfferContext) -> list[Offer]:
        held = await self._held(session, ctx)
        facts = voucher_service.member_facts(ctx.member, ctx.program, ctx.segments)
        return list(voucher_service.offers_for(held, ctx.voucher_items, member_id=ctx.member.id, facts=facts,
                                               now=ctx.now, currency=ctx.currency, locale=ctx.locale,
                                               timezone=ctx.timezone))

    async def nudges(self, session: AsyncSession, ctx: OfferContext) -> list[Nudge]:
        held = await self._held(session, ctx)
        return [VoucherExpiryNudge(text=ctx.text("nudge_voucher_expiry", name=v.campaign.name, code=v.code,
                                                 date=told_end(v.valid_until, ctx.timezone)),
                                   code=v.code, expires_at=v.valid_until)
                for v in voucher_service.expiring_soon(held, ctx.now)]

    @staticmethod
    async def _held(session: AsyncSession, ctx: OfferContext) -> list[voucher_rules.Voucher]:
        return await ctx.once("vouchers.offered", lambda: voucher_service.offered(session, ctx.member.id, ctx.now))


# Nudges in this order: stamps, tier, expiring points, expiring vouchers (offers are ranked afterwards).
PROVIDERS: tuple[OfferProvider, ...] = (PunchCards(), Tiers(), Points(), Vouchers(), Campaigns())


def _rank(offer: Offer) -> tuple:
    return rules.rank_key(offer.kind, offer.applicable, getattr(offer, "expires_at", None), offer.value)


async def ranked(session: AsyncSession, ctx: OfferContext,
                 providers: tuple[OfferProvider, ...] = PROVIDERS) -> MemberOffers:
    offers: list[Offer] = []
    nudges: list[Nudge] = []
    for provider in providers:
        offers.extend(await provider.offers(session, ctx))
        nudges.extend(await provider.nudges(session, ctx))
    return MemberOffers(offers=sorted(offers, key=_rank), nudges=nudges)
