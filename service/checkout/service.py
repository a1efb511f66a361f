"""The checkout: quote (read-only), commit (one database transaction), void and returns.

The one orchestrator across domains (DESIGN §2): it loads what the incentives need, runs
:func:`service.checkout.rules.price` (the same pipeline for quote and commit) and posts the movements the
incentives produced through :mod:`service.ledger.service`, the only writer of balances. Never commits.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.errors import StoreNotAllowed
from service.auth.rules import Principal, store_allowed
from service.checkout import repository, rules
from service.checkout.errors import (
    CurrencyMismatch,
    DuplicateReceipt,
    TransactionNotFound,
    TransactionNotReturnable,
    TransactionNotVoidable,
)
from service.checkout.models import CheckoutReturn, CheckoutTransaction
from service.checkout.schemas import (
    AppliedPublic,
    Balances,
    CheckoutRequest,
    CommitRequest,
    Earn,
    Earned,
    Greeting,
    LineResult,
    Nudge,
    Offer,
    Quote,
    QuoteMember,
    ReturnPublic,
    ReturnRequest,
    Reversed,
    TierChange,
    Totals,
    TransactionPublic,
)
from service.clock import Clock
from service.ids import new_id
from service.ledger import service as ledger
from service.ledger.rules import POINTS, LotPolicy, Movement
from service.members import service as members_service
from service.members.models import Member
from service.money import currency_exponent, format_amount
from service.points import rules as points_rules
from service.points import service as points_service
from service.points.schemas import Expiring
from service.program import service as program_service
from service.program.schemas import ProgramPublic
from service.tiers import service as tiers

EXPIRY_NUDGE_DAYS = 30
GREETINGS = {"en": "Hello, {name}!", "zh-CN": "{name}，您好！"}
ANONYMOUS_GREETINGS = {"en": "Hello!", "zh-CN": "您好！"}
UPGRADE_GREETINGS = {"en": "Welcome to {tier}!", "zh-CN": "恭喜升级为{tier}！"}
TIER_NUDGES = {"en": "Spend {amount} more to reach {tier}", "zh-CN": "再消费 {amount} 即可升级为{tier}"}
DEFAULT_LOCALE = "en"


def _program_rules(program: ProgramPublic) -> rules.ProgramRules:
    return rules.ProgramRules(
        currency=program.currency, point_value=program.point_value, max_burn_percent=program.max_burn_percent,
        earn=points_rules.EarnRules.from_config(program.earn, currency_exponent(program.currency)),
        expiry_months=program.points_expiry_months,
    )


def _basket(body: CheckoutRequest) -> rules.Basket:
    return rules.Basket(tuple(rules.Line(line.line_id, line.sku, line.category, line.quantity, line.unit_price)
                              for line in body.lines))


async def _prepare(session: AsyncSession, body: CheckoutRequest, principal: Principal,
                   region: str) -> tuple[ProgramPublic, Member]:
    """Authorize the store, check the currency, find the member: the checks quote and commit share."""
    if not store_allowed(principal, body.store_id):
        raise StoreNotAllowed(f"This till's key serves store {principal.store_id!r}, not {body.store_id!r}.")
    await program_service.get_store(session, body.store_id)
    program = await program_service.get(session)
    if body.currency != program.currency:
        raise CurrencyMismatch(f"The basket is in {body.currency} but the program runs in {program.currency}.",
                               expected=program.currency)
    ref = body.member
    member = await members_service.find_for_checkout(session, member_id=ref.member_id, card_number=ref.card_number,
                                                     phone=ref.phone, region=region)
    return program, member


def _context(program: ProgramPublic, member: Member, balance: int, body: CheckoutRequest,
             occurred_at: datetime) -> rules.Context:
    tier, multiplier, discount = rules.tier_figures(program.tiers, member.tier_code)
    return rules.Context(
        program=_program_rules(program),
        member=rules.MemberState(member.id, tier, multiplier, discount, balance),
        redeem=rules.Redemptions(points=body.redeem.points if body.redeem else 0),
        occurred_at=occurred_at,
    )


def _lines(basket: rules.Basket) -> list[LineResult]:
    return [LineResult(line_id=line.line_id, discount=line.discount, net=line.net) for line in basket.lines]


def _totals(subtotal: int, discount: int, net: int) -> Totals:
    return Totals(subtotal=subtotal, discount=discount, net=net, wallet=0, gift_cards=0, payable=net)


def _applied(applied) -> list[AppliedPublic]:
    return [AppliedPublic(kind=a.kind, id=a.id, line_id=a.line_id, amount=a.amount, points=a.points) for a in applied]


async def quote(session: AsyncSession, body: CheckoutRequest, principal: Principal, clock: Clock, *,
                region: str) -> Quote:
    program, member = await _prepare(session, body, principal, region)
    now = clock.now()
    await tiers.refresh(session, member, program, now)
    balance = await points_service.balance(session, member.id)
    ctx = _context(program, member, balance, body, now)
    priced = rules.price(_basket(body), ctx)
    basket = priced.basket
    locale = member.locale if member.locale in GREETINGS else DEFAULT_LOCALE
    expiring = await points_service.expiring(session, member.id, after=now, limit=1)
    return Quote(
        member=QuoteMember(id=member.id, name=member.name, tier=ctx.member.tier, card_number=member.card_number),
        greeting=_greeting(member, locale, await tiers.fresh_upgrade(session, member, program, now)),
        offers=_offers(program, ctx, _basket(body)),
        nudges=[*_nudges(expiring, now, balance),
                *_tier_nudges(await tiers.nudge(session, member, program, now), program, locale)],
        applied=_applied(priced.applied),
        lines=_lines(basket),
        totals=_totals(basket.subtotal, basket.discount, basket.net),
        earn=Earn(points=priced.points_earned, stamps=[], qualifying_spend=priced.qualifying_spend),
        balances=Balances(points=balance, wallet=0),
    )


def _greeting(member: Member, locale: str, upgraded_to: str | None = None) -> Greeting:
    text = GREETINGS[locale].format(name=member.name) if member.name else ANONYMOUS_GREETINGS[locale]
    if upgraded_to:
        return Greeting(text=f"{text} {UPGRADE_GREETINGS[locale].format(tier=upgraded_to)}", locale=locale,
                        occasion="tier_upgrade")
    return Greeting(text=text, locale=locale, occasion="default")


def _offers(program: ProgramPublic, ctx: rules.Context, basket: rules.Basket) -> list[Offer]:
    offers = []
    tier_discounts = rules.TierDiscount().price(basket, ctx).discounts
    if ctx.member.tier_discount_percent > 0:
        value = sum(tier_discounts.values())
        offers.append(Offer(kind="tier_discount", id=ctx.member.tier, title=f"{ctx.member.tier} discount",
                            description=f"{ctx.member.tier_discount_percent}% off as a {ctx.member.tier} member",
                            value=value, applicable=value > 0))
    balance = ctx.member.points_balance
    if balance != 0:
        after_tier = basket.discounted(tier_discounts)
        limit = points_rules.max_burnable_points(after_tier.net, max_burn_percent=program.max_burn_percent,
                                                 point_value=program.point_value)
        usable = max(min(balance, limit), 0)
        value = usable * program.point_value
        reason = None
        if balance < 0:
            reason = f"The member owes {-balance} points from a return; points can be used again once repaid."
        elif usable == 0:
            reason = "Points cannot pay for this basket."
        offers.append(Offer(kind="points", title="Pay with points",
                            description=f"Use up to {usable} points, worth {format_amount(value, program.currency)}",
                            value=value, applicable=usable > 0, reason=reason))
    return offers


def _tier_nudges(nudge: tuple[int, str] | None, program: ProgramPublic, locale: str) -> list[Nudge]:
    if nudge is None:
        return []
    needed, name = nudge
    return [Nudge(kind="tier", text=TIER_NUDGES[locale].format(amount=format_amount(needed, program.currency),
                                                                tier=name))]


def _nudges(expiring: list[Expiring], now: datetime, balance: int) -> list[Nudge]:
    if balance <= 0:
        return []
    return [Nudge(kind="points_expiry", text=f"{e.amount} points expire on {e.expires_at.date().isoformat()}")
            for e in expiring if e.expires_at <= now + timedelta(days=EXPIRY_NUDGE_DAYS)]


async def commit(session: AsyncSession, body: CommitRequest, principal: Principal, clock: Clock, *,
                 region: str) -> TransactionPublic:
    now = clock.now()
    occurred_at = body.occurred_at or now
    rules.check_occurred_at(occurred_at, now, is_admin=principal.is_admin)
    program, member = await _prepare(session, body, principal, region)
    row = CheckoutTransaction(
        id=new_id("txn"), store_id=body.store_id, receipt_id=body.receipt_id, member_id=member.id,
        status="committed", currency=body.currency, occurred_at=occurred_at, created_at=now, subtotal=0, discount=0,
        net=0, points_burned=0, points_earned=0, qualifying_spend=0, points_balance_after=0, lines=[], applied=[],
    )
    # The receipt first: a duplicate is refused by the unique constraint before any other work. Commits always
    # insert their receipt before they take the member's lock, so the two can never wait on each other in a cycle.
    if not await repository.add_transaction(session, row):
        raise DuplicateReceipt(f"Receipt {body.receipt_id!r} was already committed at store {body.store_id!r}.")
    # Then the lock, then every read the decision depends on: a concurrent commit for this member waits here.
    accounts = await ledger.lock_accounts(session, member.id, [POINTS], now)
    tier_lock = await tiers.lock(session, member, program, now)  # due reviews apply before pricing
    ctx = _context(program, member, accounts.balance(POINTS), body, occurred_at)
    priced = rules.price(_basket(body), ctx)
    ledger_transaction_id = None
    if priced.movements:
        ledger_transaction_id = await ledger.post(session, ledger.Posting(
            kind="checkout", member_id=member.id, at=now, movements=priced.movements, store_id=body.store_id,
            reference=row.id), accounts)
    # The row's figures last, so that they reach the database in one UPDATE.
    basket = priced.basket
    burned_by_line = priced.discounts_by_kind.get(rules.PointsBurn.kind, {})
    row.ledger_transaction_id = ledger_transaction_id
    row.points_balance_after = accounts.balance(POINTS)
    row.subtotal, row.discount, row.net = basket.subtotal, basket.discount, basket.net
    row.points_burned, row.points_earned = priced.points_burned, priced.points_earned
    row.qualifying_spend = priced.qualifying_spend
    row.lines = [{
        "line_id": line.line_id, "sku": line.sku, "category": line.category, "quantity": line.quantity,
        "unit_price": line.unit_price, "subtotal": line.subtotal, "discount": line.discount, "net": line.net,
        "points_discount": burned_by_line.get(line.line_id, 0),
        "points_burned": str(priced.line_points_burned(line.line_id, program.point_value)),
        "points_earned": str(priced.line_points.get(line.line_id, Decimal(0))),
    } for line in basket.lines]
    row.applied = [a.model_dump(exclude_none=True) for a in _applied(priced.applied)]
    await session.flush()
    change = await tiers.record_commit(session, member, program, tier_lock, transaction_id=row.id,
                                       occurred_at=occurred_at, amount=priced.qualifying_spend, now=now)
    return to_public(row, tier_change=change)


def to_public(row: CheckoutTransaction, *, points_balance: int | None = None,
              tier_change: tuple[str | None, str] | None = None) -> TransactionPublic:
    return TransactionPublic(
        id=row.id, receipt_id=row.receipt_id, store_id=row.store_id, member_id=row.member_id, status=row.status,
        occurred_at=row.occurred_at, applied=[AppliedPublic.model_validate(a) for a in row.applied],
        lines=[LineResult(line_id=ln["line_id"], discount=ln["discount"], net=ln["net"]) for ln in row.lines],
        totals=_totals(row.subtotal, row.discount, row.net),
        earned=Earned(points=row.points_earned, stamps=[], vouchers_issued=[], rewards_issued=[]),
        balances_after=Balances(points=row.points_balance_after if points_balance is None else points_balance,
                                wallet=0),
        tier_change=None if tier_change is None else TierChange.model_validate(
            {"from": tier_change[0], "to": tier_change[1]}),
    )


async def _load(session: AsyncSession, transaction_id: str, principal: Principal, *,
                lock: bool = False) -> CheckoutTransaction:
    row = await repository.get(session, transaction_id, lock=lock)
    if row is None:
        raise TransactionNotFound(f"There is no transaction {transaction_id!r}.")
    if not store_allowed(principal, row.store_id):
        raise StoreNotAllowed("This transaction belongs to another store.")
    return row


async def get(session: AsyncSession, transaction_id: str, principal: Principal) -> TransactionPublic:
    row = await _load(session, transaction_id, principal)
    return to_public(row, tier_change=await tiers.change_of(session, row.id))


async def void(session: AsyncSession, transaction_id: str, principal: Principal, clock: Clock) -> TransactionPublic:
    """Reverse everything the transaction (and its returns) still holds: earned points are clawed back even if
    that makes the balance negative; burned points go back to the lots they came from."""
    row = await _load(session, transaction_id, principal, lock=True)
    if row.status == "voided":
        raise TransactionNotVoidable("This transaction was already voided.")
    if row.status == "returned":
        raise TransactionNotVoidable("Everything on this transaction was already returned; there is nothing to void.")
    now = clock.now()
    accounts = await ledger.lock_accounts(session, row.member_id, [POINTS], now)
    if row.ledger_transaction_id:
        returns = await repository.returns_of(session, row.id)
        ledger_ids = [row.ledger_transaction_id, *(r.ledger_transaction_id for r in returns if r.ledger_transaction_id)]
        movements = await ledger.reversal_movements(session, ledger_ids, kind="void",
                                                    origin=row.ledger_transaction_id)
        if movements:
            await ledger.post(session, ledger.Posting(
                kind="void", member_id=row.member_id, at=now, movements=movements, store_id=row.store_id,
                reference=row.id, reverses_id=row.ledger_transaction_id), accounts)
    await tiers.record_void(session, row.id)
    row.status = "voided"
    row.voided_at = now
    await session.flush()
    return to_public(row, points_balance=accounts.balance(POINTS))


async def return_lines(session: AsyncSession, transaction_id: str, body: ReturnRequest, principal: Principal,
                       clock: Clock) -> ReturnPublic:
    row = await _load(session, transaction_id, principal, lock=True)
    if row.status not in ("committed", "partially_returned"):
        raise TransactionNotReturnable(f"This transaction is {row.status.replace('_', ' ')}; nothing more can be "
                                       "returned.")
    now = clock.now()
    previous = await repository.returns_of(session, row.id)
    returned: dict[str, int] = defaultdict(int)
    for earlier in previous:
        for line in earlier.lines:
            returned[line["line_id"]] += line["quantity"]
    before = rules.ReturnTotals(
        points_clawed_back=sum(r.points_clawed_back for r in previous),
        points_refunded=sum(r.points_refunded for r in previous),
        qualifying_spend=sum(r.qualifying_spend for r in previous),
    )
    sold = [rules.SoldLine(ln["line_id"], ln["quantity"], ln["net"], Decimal(ln["points_earned"]),
                           Decimal(ln["points_burned"])) for ln in row.lines]
    plan = rules.plan_return(sold, returned, {ln.line_id: ln.quantity for ln in body.lines},
                             points_earned=row.points_earned, points_burned=row.points_burned, before=before)
    movements = []
    if plan.points_clawed_back:
        movements.append(Movement(account=POINTS, asset=POINTS, amount=-plan.points_clawed_back,
                                  contra="program:points_issued", kind="return", lots=LotPolicy.CLAWBACK,
                                  allow_negative=True, origin=row.ledger_transaction_id))
    if plan.points_refunded:
        movements.append(Movement(account=POINTS, asset=POINTS, amount=plan.points_refunded,
                                  contra="program:points_redeemed", kind="return", lots=LotPolicy.RESTORE,
                                  origin=row.ledger_transaction_id))
    ret = CheckoutReturn(
        id=new_id("ret"), transaction_id=row.id,
        lines=[{"line_id": ln.line_id, "quantity": ln.quantity} for ln in body.lines],
        points_clawed_back=plan.points_clawed_back, points_refunded=plan.points_refunded,
        qualifying_spend=plan.qualifying_spend, created_at=now,
    )
    if movements:
        accounts = await ledger.lock_accounts(session, row.member_id, [POINTS], now)
        ret.ledger_transaction_id = await ledger.post(session, ledger.Posting(
            kind="return", member_id=row.member_id, at=now, movements=tuple(movements), store_id=row.store_id,
            reference=ret.id, reverses_id=row.ledger_transaction_id), accounts)
    await repository.add_return(session, ret)
    await tiers.record_return(session, row.id, plan.qualifying_spend)
    row.status = "returned" if plan.fully_returned else "partially_returned"
    await session.flush()
    return ReturnPublic(id=ret.id, transaction_id=row.id, reversed=Reversed(
        points=plan.points_clawed_back, points_refunded=plan.points_refunded, stamps=[], wallet=0,
        qualifying_spend=plan.qualifying_spend))
