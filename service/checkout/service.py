"""The checkout: quote (read-only), commit (one database transaction), void and returns.

The one orchestrator across domains (DESIGN §2): it loads what the incentives need, runs
:func:`service.checkout.rules.price` (the same pipeline for quote and commit) and posts the movements the
incentives produced through :mod:`service.ledger.service`, the only writer of balances. Never commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.errors import StoreNotAllowed
from service.auth.rules import Principal, bound_store, store_allowed
from service.checkout import repository, rules
from service.checkout.errors import (
    CurrencyMismatch,
    DuplicateReceipt,
    DuplicateReturn,
    TransactionNotFound,
    TransactionNotReturnable,
    TransactionNotVoidable,
)
from service.checkout.models import CheckoutReturn, CheckoutTransaction
from service.checkout.schemas import (
    APPLIED,
    AppliedPublic,
    Balances,
    CheckoutRequest,
    CommitRequest,
    Earn,
    Earned,
    LineResult,
    Quote,
    QuoteMember,
    ReturnPublic,
    ReturnRequest,
    Reversed,
    StampsEarned,
    TierChange,
    Totals,
    TransactionPublic,
    TransactionSummary,
)
from service.clock import Clock
from service.errors import ServiceError
from service.events import service as events
from service.giftcards import rules as giftcard_rules
from service.giftcards import service as giftcards
from service.giftcards.models import GiftCard
from service.ids import new_id
from service.ledger import service as ledger
from service.ledger.rules import GIFT_CARD, POINTS, LotPolicy, Movement, gift_card_key
from service.members import service as members_service
from service.members.models import Member
from service.money import currency_exponent
from service.personalization import offers as personal_offers
from service.personalization import service as personalization
from service.points import rules as points_rules
from service.program import service as program_service
from service.program.rules import tier_code_of
from service.program.schemas import ProgramPublic
from service.program.service import StoreInfo
from service.punchcards import rules as punch_rules
from service.punchcards import service as punch_service
from service.ratelimit import Guard
from service.referrals import service as referrals
from service.tiers import service as tiers
from service.vouchers import service as voucher_service
from service.wallet import rules as wallet_rules
from service.wallet.rules import WALLET_BONUS, WALLET_CASH, WALLET_KINDS

POINTS_ISSUED = "program:points_issued"  # the program's side of every point a sale gives


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
                   region: str) -> tuple[ProgramPublic, Member, StoreInfo]:
    """Authorize the store, check the currency, find the member: the checks quote and commit share, answered in
    that order. The member is read first all the same: its statement carries the program's versions along, so the
    store and the program cost no read of their own. The member is a copy of its columns, not an ORM object
    (``members.service.find_for_checkout``)."""
    if not store_allowed(principal, body.store_id):
        raise StoreNotAllowed(f"This till's key serves store {principal.store_id!r}, not {body.store_id!r}.")
    ref = body.member
    try:
        member, refused = await members_service.find_for_checkout(
            session, member_id=ref.member_id, card_number=ref.card_number, phone=ref.phone, region=region), None
    except ServiceError as error:  # told after the store and the currency, as before
        member, refused = None, error
    store = await program_service.get_store(session, body.store_id)
    program = await program_service.get(session)
    if body.currency != program.currency:
        raise CurrencyMismatch(f"The basket is in {body.currency} but the program runs in {program.currency}.",
                               expected=program.currency)
    if refused is not None:
        raise refused
    return program, member, store


def _context(program: ProgramPublic, member: Member, balances: dict[str, int], body: CheckoutRequest,
             occurred_at: datetime, punch: rules.PunchState, segments: frozenset[str],
             gift_cards: tuple[giftcard_rules.Tender, ...] = (),
             vouchers: rules.VoucherState = rules.VoucherState()) -> rules.Context:
    tier, multiplier, discount = rules.tier_figures(program.tiers, member.tier_code)
    return rules.Context(
        program=_program_rules(program),
        member=rules.MemberState(member.id, tier, multiplier, discount, balances.get(POINTS, 0), segments=segments,
                                 wallet_cash=balances.get(WALLET_CASH, 0), wallet_bonus=balances.get(WALLET_BONUS, 0)),
        redeem=rules.Redemptions(points=body.redeem.points if body.redeem else 0,
                                 wallet_amount=body.redeem.wallet_amount if body.redeem else 0,
                                 punch_rewards=tuple(_reward_ids(body))),
        occurred_at=occurred_at,
        punch=punch,
        gift_cards=gift_cards,
        vouchers=vouchers,
    )


def _tier_code(program: ProgramPublic, member: Member) -> str:
    return tier_code_of(program.tiers, member.tier_code)


def _reward_ids(body: CheckoutRequest) -> list[str]:
    return list(body.redeem.punch_rewards) if body.redeem else []


def _gift_card_claims(body: CheckoutRequest) -> list[giftcards.Claim]:
    return [giftcards.Claim(c.code, c.pin, c.amount) for c in body.redeem.gift_cards] if body.redeem else []


async def _checked_gift_cards(body: CheckoutRequest, guard: giftcards.PinGuard | None, principal: Principal,
                              now: datetime) -> list[GiftCard]:
    """The gift cards the request hands over, each code and PIN checked (``giftcards.redeemable``), before the
    request's session runs its first statement."""
    claims = _gift_card_claims(body)
    if not claims:
        return []
    if guard is None:
        raise ValueError("gift cards handed over without a PIN guard")  # every route that takes them has one
    return await giftcards.redeemable(claims, guard, principal, now)


async def _gift_card_tenders(session: AsyncSession, body: CheckoutRequest, cards: list[GiftCard],
                             now: datetime,
                             locked: ledger.LockedAccounts | None = None) -> tuple[giftcard_rules.Tender, ...]:
    """The checked gift cards with their balances: read for a quote, read under their accounts' lock for a
    commit (``locked``: the member's accounts, locked first)."""
    if not cards:
        return ()
    claims = _gift_card_claims(body)
    ids = [card.id for card in cards]
    if locked is None:
        held = await giftcards.balances(session, ids)
    else:
        await ledger.lock_gift_card_accounts(session, ids, now, into=locked)
        held = {i: locked.balance(gift_card_key(i)) for i in ids}
    return tuple(giftcard_rules.Tender(card.id, card.code, held.get(card.id, 0), claim.amount)
                 for card, claim in zip(cards, claims, strict=True))


def _voucher_codes(body: CheckoutRequest) -> list[str]:
    return list(body.redeem.vouchers) if body.redeem else []


async def _screened_codes(session: AsyncSession, body: CheckoutRequest, lookups: Guard | None, now: datetime,
                          region: str) -> list[str]:
    """The voucher codes the basket names, screened (``voucher_service.screen``) on the request's session before
    it writes anything. The member's read is announced first (``db.prefetch``): on PostgreSQL it goes out with the
    screening's reads, in one statement, and :func:`_prepare` takes it from there."""
    ref = body.member
    members_service.prefetch_for_checkout(session, member_id=ref.member_id, card_number=ref.card_number,
                                          phone=ref.phone, region=region)
    return await voucher_service.screen(lookups, _voucher_codes(body), now, reading=session)


def _stamping(programs: Sequence[punch_rules.Program], body: CheckoutRequest,
              occurred_at: datetime) -> list[punch_rules.Program]:
    """The active programs the basket stamps (``punch_rules.stamping``)."""
    return punch_rules.stamping(programs, [(line.sku, line.category) for line in body.lines], occurred_at)


def _stamp_balances(programs: list[punch_rules.Program], balance_of) -> dict[str, int]:
    return {p.id: balance_of(punch_rules.account_kind(p.id)) for p in programs}


def _stamps_public(stamps: dict[str, int]) -> list[StampsEarned]:
    return [StampsEarned(program_id=program_id, stamps=n) for program_id, n in sorted(stamps.items()) if n]


def _lines(basket: rules.Basket) -> list[LineResult]:
    return [LineResult(line_id=line.line_id, discount=line.discount, net=line.net) for line in basket.lines]


def _totals(subtotal: int, discount: int, net: int, wallet: int = 0, gift_cards: int = 0) -> Totals:
    return Totals(subtotal=subtotal, discount=discount, net=net, wallet=wallet, gift_cards=gift_cards,
                  payable=net - wallet - gift_cards)


def _wallet_paid(row: CheckoutTransaction) -> int:
    return sum(a["amount"] for a in row.applied if a["kind"] == rules.WalletTender.kind)


def _gift_cards_paid(row: CheckoutTransaction) -> dict[str, int]:
    """``{gift card id: amount}`` the sale took from each card."""
    return {a["id"]: a["amount"] for a in row.applied if a["kind"] == rules.GiftCardTender.kind}


def _wallet_total(balances: dict[str, int]) -> int:
    return balances.get(WALLET_CASH, 0) + balances.get(WALLET_BONUS, 0)


def _applied(applied) -> list[AppliedPublic]:
    return [APPLIED.validate_python({"kind": a.kind, "id": a.id, "line_id": a.line_id, "amount": a.amount,
                                     "points": a.points}) for a in applied]


async def quote(session: AsyncSession, body: CheckoutRequest, principal: Principal, clock: Clock, *,
                region: str, guard: giftcards.PinGuard | None = None,
                lookups: Guard | None = None) -> Quote:
    now = clock.now()
    checked_cards = await _checked_gift_cards(body, guard, principal, now)
    codes = await _screened_codes(session, body, lookups, now, region)
    # A quote writes nothing: the member is a copy of its columns, and a review that fell due shows in the tier
    # below without being applied (the commit applies it under the tier lock).
    program, member, store = await _prepare(session, body, principal, region)
    # The member's reads below and the offers' go out together, in one statement, at the first of them.
    tiers.prefetch_standing(session, member, program, now)
    ledger.prefetch_holdings(session, member.id, expiring_after=now, expiring_limit=personal_offers.EXPIRY_NUDGES)
    personalization.prefetch_activity(session, member.id)
    voucher_service.prefetch_quote(session, member.id, codes, now)
    punch_service.prefetch_available_rewards(session, member.id, now)
    standing = await tiers.standing(session, member, program, now)
    member.tier_code = standing.code
    held, expiring = await ledger.holdings(session, member.id, expiring_after=now,
                                           expiring_limit=personal_offers.EXPIRY_NUDGES)
    balance = held.get(POINTS, 0)
    programs = await punch_service.active_programs(session)
    claims = await punch_service.claims(session, member.id, _reward_ids(body), now, lock=False)
    stamping = _stamping(programs, body, now)
    punch = rules.PunchState(tuple(stamping), _stamp_balances(stamping, lambda k: held.get(k, 0)), tuple(claims))
    activity = await personalization.activity_for_commit(session, member.id)
    tier_code = _tier_code(program, member)
    segments = personalization.member_segments(member, activity, tier_code, now.date())
    cards = await _gift_card_tenders(session, body, checked_cards, now)
    facts = voucher_service.member_facts(member, program, segments)
    claimed = await voucher_service.claims(session, codes, now, lock=False, timezone=store.timezone)
    vouchers = rules.VoucherState(tuple(claimed), facts, now,
                                  await voucher_service.held(session, member.id, claimed, lock=False),
                                  timezone=store.timezone)
    ctx = _context(program, member, held, body, now, punch, segments, cards, vouchers)
    priced = rules.price(_basket(body), ctx)
    basket = priced.basket
    # The birthday bonus the sale would carry, from the running figures read above. A referral's points are not
    # told here: whether one is due takes a read the quote does not make (the commit decides under its lock).
    _, birthday = personalization.birthday_bonus(member, activity, program, now, store)
    tier_name = next(t.name for t in program.tiers if t.code == tier_code)
    greeting = personalization.greeting(member, activity, program, store, now,
                                        upgraded_at=standing.upgraded_at, tier_name=tier_name)
    ranked = await personal_offers.ranked(session, personal_offers.OfferContext(
        member=member, program=program, locale=greeting.locale, now=now, balances=held, segments=segments,
        basket=_basket(body), earning=basket,
        voucher_items=rules.voucher_items(rules.before_vouchers(_basket(body), ctx)),
        burnable_net=priced.burnable_net, tier_discount=priced.tier_discount,
        tier_spend=standing.spend, expiring_points=expiring, timezone=store.timezone))
    return Quote(
        member=QuoteMember(id=member.id, name=member.name, tier=ctx.member.tier, card_number=member.card_number),
        greeting=greeting,
        offers=ranked.offers,
        nudges=ranked.nudges,
        applied=_applied(priced.applied),
        lines=_lines(basket),
        totals=_totals(basket.subtotal, basket.discount, basket.net, priced.tenders.get(rules.WalletTender.kind, 0),
                       priced.tenders.get(rules.GiftCardTender.kind, 0)),
        earn=Earn(points=priced.points_earned, bonus_points=_points_in(birthday),
                  stamps=_stamps_public(priced.stamps_by_program()),
                  qualifying_spend=priced.qualifying_spend),
        balances=Balances(points=balance, wallet=_wallet_total(held)),
    )


async def commit(session: AsyncSession, body: CommitRequest, principal: Principal, clock: Clock, *,
                 region: str, guard: giftcards.PinGuard | None = None,
                 lookups: Guard | None = None) -> TransactionPublic:
    """Commit a sale. ``guard`` and ``lookups`` limit wrong gift card PINs and unknown voucher codes per key; only
    a request that names gift cards or vouchers needs them (service-level replays such as imports pass none).

    A receipt the store already has is a 409 ``duplicate_receipt`` whatever else is wrong with the request: the
    receipt goes in last, so when the sale fails on something else, whether the receipt exists is read then."""
    try:
        return await _commit(session, body, principal, clock, region=region, guard=guard, lookups=lookups)
    except ServiceError as exc:
        if not isinstance(exc, DuplicateReceipt) and await repository.has_receipt(session, body.store_id,
                                                                                   body.receipt_id):
            raise _duplicate(body) from exc
        raise


def _duplicate(body: CommitRequest) -> DuplicateReceipt:
    return DuplicateReceipt(f"Receipt {body.receipt_id!r} was already committed at store {body.store_id!r}: "
                            f"GET /v1/stores/{body.store_id}/receipts/{body.receipt_id} shows that sale.")


async def _commit(session: AsyncSession, body: CommitRequest, principal: Principal, clock: Clock, *,
                  region: str, guard: giftcards.PinGuard | None, lookups: Guard | None) -> TransactionPublic:
    now = clock.now()
    occurred_at = body.occurred_at or now
    rules.check_occurred_at(occurred_at, now, is_admin=principal.is_admin)
    checked_cards = await _checked_gift_cards(body, guard, principal, now)
    codes = await _screened_codes(session, body, lookups, now, region)
    program, member, store = await _prepare(session, body, principal, region)
    # The receipt's row, filled in below: a plain copy of its columns (an ORM instance cost about 1.5 % of the
    # commit's CPU to build and fill); it is inserted whole, once (repository.add_transaction).
    row = SimpleNamespace(
        id=new_id("txn"), store_id=body.store_id, receipt_id=body.receipt_id, member_id=member.id,
        status="committed", currency=body.currency, occurred_at=occurred_at, created_at=now, voided_at=None,
        ledger_transaction_id=None)
    # The lock, then every read the decision depends on: a concurrent commit for this member waits here. The
    # receipt goes in last (below), once its figures are known.
    stamping = _stamping(await punch_service.active_programs(session), body, occurred_at)
    # The wallet's accounts too: balances_after shows the wallet, and a wallet payment spends from it.
    accounts = await ledger.lock_accounts(
        session, member.id, [*rules.EVERY_SALE_LOCKS, *(punch_rules.account_kind(p.id) for p in stamping)], now)
    sold = _basket(body)
    referral_found = await referrals.pending(session, member, program, sold.subtotal, now)
    # The gift cards' accounts next, before any voucher or campaign: the one lock order (README, Lock order). A void
    # or return locks the cards, then the campaigns it gives places back to; a sale naming a bearer code of one of
    # those campaigns, paid with one of those cards, waited for the card while holding the campaign.
    cards = await _gift_card_tenders(session, body, checked_cards, now, locked=accounts)
    # Reads under that lock go out together at the first of them (db.prefetch): the running figures and the
    # points lots a burn draws from, announced here, with the tier read after the tier lock.
    personalization.prefetch_activity(session, member.id)
    if body.redeem and body.redeem.points:
        ledger.prefetch_draw(session, member.id)
    # Due reviews apply before pricing.
    tier_lock = await tiers.lock(session, member, program, now, occurred_at=occurred_at)
    # Rewards are read under the member's lock (and locked themselves): a reward used by a concurrent commit is
    # seen as redeemed here.
    claims = await punch_service.claims(session, member.id, _reward_ids(body), now, lock=True)
    punch = rules.PunchState(tuple(stamping), _stamp_balances(stamping, accounts.balance), tuple(claims))
    # The running figures, read under the member's lock: what bonus events and voucher audiences target, whether
    # the birthday bonus is still due this year.
    activity = await personalization.activity_for_commit(session, member.id)
    segments = personalization.member_segments(member, activity, _tier_code(program, member),
                                               occurred_at.date())
    facts = voucher_service.member_facts(member, program, segments)
    # Vouchers are locked too: a second till redeeming the same code waits here, then finds it used.
    claimed = await voucher_service.claims(session, codes, now, lock=True, timezone=store.timezone)
    vouchers = rules.VoucherState(tuple(claimed), facts, now,
                                  await voucher_service.held(session, member.id, claimed, lock=True),
                                  timezone=store.timezone)
    ctx = _context(program, member, {kind: accounts.balance(kind) for kind in accounts.by_kind}, body, occurred_at,
                   punch, segments, cards, vouchers)
    priced = rules.price(sold, ctx)
    birthday_year, bonus = personalization.birthday_bonus(member, activity, program, occurred_at, store)
    referral = referrals.due(referral_found, program, priced.basket.net)
    bonus += referral.movements(occurred_at, program) if referral else ()
    movements = priced.movements + bonus
    ledger_transaction_id = None
    if movements:
        ledger_transaction_id = await ledger.post(session, ledger.Posting(
            kind="checkout", member_id=member.id, at=now, movements=movements, store_id=body.store_id,
            reference=row.id), accounts)
    await punch_service.redeem(session, [c.reward_id for c in claims], row.id, now)
    await voucher_service.redeem(session, vouchers.claims, member.id, row.id, now)
    issued = await punch_service.issue(session, member.id, row.id, priced.rewards_due, {p.id: p for p in stamping},
                                       occurred_at=occurred_at, now=now)
    basket = priced.basket
    burned_by_line = priced.discounts_by_kind.get(rules.PointsBurn.kind, {})
    row.ledger_transaction_id = ledger_transaction_id
    row.points_balance_after = accounts.balance(POINTS)
    row.wallet_balance_after = sum(accounts.balance(kind) for kind in WALLET_KINDS)
    row.subtotal, row.discount, row.net = basket.subtotal, basket.discount, basket.net
    row.points_burned, row.points_earned = priced.points_burned, priced.points_earned
    row.qualifying_spend = priced.qualifying_spend
    row.lines = [{
        "line_id": line.line_id, "sku": line.sku, "category": line.category, "quantity": line.quantity,
        "unit_price": line.unit_price, "subtotal": line.subtotal, "discount": line.discount, "net": line.net,
        "points_discount": burned_by_line.get(line.line_id, 0),
        "points_burned": str(priced.line_points_burned(line.line_id, program.point_value)),
        "points_earned": str(priced.line_points.get(line.line_id, Decimal(0))),
        "free_units": priced.free_units.get(line.line_id, 0),
        "stamps": {program_id: per_line[line.line_id] for program_id, per_line in sorted(priced.stamps.items())
                   if line.line_id in per_line},
    } for line in basket.lines]
    row.applied = [APPLIED.dump_python(a, exclude_none=True) for a in _applied(priced.applied)]
    # The receipt, whole, in one INSERT after every lock: a duplicate is refused by the unique constraint, and the
    # whole commit rolls back (on PostgreSQL it fails the statement that carries the deferred writes, answered as
    # the same 409). A commit of the same receipt elsewhere waits here on the first one's row while holding only
    # its own locks, and the first takes no lock after this: the two cannot wait on each other in a cycle.
    if not await repository.add_transaction(session, row):
        raise _duplicate(body)
    change = await tiers.record_commit(session, member, program, tier_lock, transaction_id=row.id,
                                       occurred_at=occurred_at, amount=priced.qualifying_spend, now=now)
    await personalization.record_commit(session, member.id, transaction_id=row.id, occurred_at=occurred_at,
                                        net=basket.net, now=now, birthday_year=birthday_year)
    if referral:
        await referrals.record(session, member, referral, program, transaction_id=row.id, store_id=body.store_id,
                               now=now)
    # Threshold vouchers see the member as the sale leaves them (a sale that upgraded the tier counts as the new).
    earned_vouchers = await voucher_service.issue_for_sale(
        session, member.id, voucher_service.member_facts(member, program, segments), row.id, priced.qualifying_spend,
        occurred_at=occurred_at, now=now)
    public = to_public(row, bonus_points=_points_in(bonus), rewards_issued=punch_service.issued_public(issued),
                       tier_change=change, vouchers_issued=voucher_service.issued_public(earned_vouchers))
    await events.emit(session, "transaction.committed", public.model_dump(mode="json", by_alias=True), at=now,
                      member_id=member.id)
    return public


async def _wallet_balance(session: AsyncSession, member_id: str) -> int:
    return _wallet_total(await ledger.balances(session, member_id))


def _line_stamps(row: CheckoutTransaction) -> dict[str, int]:
    stamps: dict[str, int] = defaultdict(int)
    for line in row.lines:
        for program_id, n in line.get("stamps", {}).items():
            stamps[program_id] += n
    return dict(stamps)


def _stamp_removals(row: CheckoutTransaction, returned: dict[str, int], now_returned: dict[str, int]) -> dict[str, int]:
    """Stamps to take back per program when ``now_returned`` units come back after ``returned`` earlier."""
    removals: dict[str, int] = defaultdict(int)
    for line in row.lines:
        for program_id, paid in line.get("stamps", {}).items():
            removals[program_id] += punch_rules.stamps_to_remove(paid, returned.get(line["line_id"], 0),
                                                                 now_returned.get(line["line_id"], 0))
    return {program_id: n for program_id, n in removals.items() if n > 0}


def _stamp_kinds(row: CheckoutTransaction) -> list[str]:
    return [punch_rules.account_kind(program_id) for program_id in sorted(_line_stamps(row))]


def _points_in(movements: tuple[Movement, ...]) -> int:
    return sum(m.amount for m in movements if m.asset == POINTS)


async def _bonus_points(session: AsyncSession, row: CheckoutTransaction) -> int:
    """What the sale credited beyond its lines' points (a birthday bonus, a referred member's points), read back
    from its own ledger transaction (insert-only: later voids and returns are transactions of their own): the
    points it issued less its lines'. The receipt keeps no column for it; the commit's answer had it in hand."""
    if not row.ledger_transaction_id:
        return 0
    issued = -(await ledger.program_net(session, [row.ledger_transaction_id])).get(POINTS_ISSUED, 0)
    return max(issued - row.points_earned, 0)


def to_public(row: CheckoutTransaction, *, bonus_points: int, points_balance: int | None = None,
              wallet_balance: int | None = None, rewards_issued: list[dict] | None = None,
              tier_change: tuple[str | None, str] | None = None,
              vouchers_issued: list[dict] | None = None) -> TransactionPublic:
    """The receipt. ``balances_after`` is what the sale left (kept with it), unless the caller gives the balances
    its own change left (a void). ``bonus_points``: what the sale credited beyond its lines' points."""
    return TransactionPublic(
        id=row.id, receipt_id=row.receipt_id, store_id=row.store_id, member_id=row.member_id, status=row.status,
        occurred_at=row.occurred_at, applied=[APPLIED.validate_python(a) for a in row.applied],
        lines=[LineResult(line_id=ln["line_id"], discount=ln["discount"], net=ln["net"]) for ln in row.lines],
        totals=_totals(row.subtotal, row.discount, row.net, _wallet_paid(row), sum(_gift_cards_paid(row).values())),
        earned=Earned(points=row.points_earned, bonus_points=bonus_points, stamps=_stamps_public(_line_stamps(row)),
                      vouchers_issued=vouchers_issued or [], rewards_issued=rewards_issued or []),
        balances_after=Balances(points=row.points_balance_after if points_balance is None else points_balance,
                                wallet=row.wallet_balance_after if wallet_balance is None else wallet_balance),
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


async def get(session: AsyncSession, transaction_id: str, principal: Principal, clock: Clock) -> TransactionPublic:
    return await _as_committed(session, await _load(session, transaction_id, principal), clock)


async def by_receipt(session: AsyncSession, store_id: str, receipt_id: str, principal: Principal,
                     clock: Clock) -> TransactionPublic:
    """The sale a store committed under this receipt number: what a till that lost a commit's answer (and its
    idempotency key) reads after a 409 ``duplicate_receipt``, to void or return it. A pos key reads only its own
    store's receipts (403 before any read)."""
    if not store_allowed(principal, store_id):
        raise StoreNotAllowed("A till reads only its own store's receipts.")
    row = await repository.by_receipt(session, store_id, receipt_id)
    if row is None:
        raise TransactionNotFound(f"Store {store_id!r} has no committed receipt {receipt_id!r}.")
    return await _as_committed(session, row, clock)


async def _as_committed(session: AsyncSession, row: CheckoutTransaction, clock: Clock) -> TransactionPublic:
    return to_public(row, bonus_points=await _bonus_points(session, row),
                     rewards_issued=await punch_service.issued_by(session, row.id),
                     tier_change=await tiers.change_of(session, row.id),
                     vouchers_issued=await voucher_service.issued_by(session, row.id, clock.now()))


async def member_sales(session: AsyncSession, member_id: str, principal: Principal, *,
                       before: tuple[datetime, str] | None, limit: int) -> list[TransactionSummary]:
    """The member's purchase history, newest first by when each sale happened; a pos key sees only its own
    store's sales (members shop at every store; a store's receipts are its own)."""
    await members_service.get(session, member_id)
    rows = await repository.member_sales(session, member_id, store_id=bound_store(principal), before=before,
                                         limit=limit)
    return [TransactionSummary(**row._mapping) for row in rows]


async def void(session: AsyncSession, transaction_id: str, principal: Principal, clock: Clock) -> TransactionPublic:
    """Reverse everything the transaction (and its returns) still holds: earned points are clawed back even if
    that makes the balance negative; burned points go back to the lots they came from."""
    row = await _load(session, transaction_id, principal, lock=True)
    if row.status == "voided":
        raise TransactionNotVoidable("This transaction was already voided.")
    if row.status == "returned":
        raise TransactionNotVoidable("Everything on this transaction was already returned; there is nothing to void.")
    now = clock.now()
    # The cards of the rewards the sale used too: one in deficit takes its reward back as stamps (restore_redeemed).
    used_cards = ([punch_rules.account_kind(p) for p in await punch_service.programs_redeemed_by(session, row.id)]
                  if punch_service.used_a_reward(row.applied) else [])
    accounts = await ledger.lock_accounts(
        session, row.member_id,
        [POINTS, *(WALLET_KINDS if _wallet_paid(row) else ()), *_stamp_kinds(row), *used_cards], now)
    referral = await referrals.lock_referrer(session, row.id, now)
    cards_paid = _gift_cards_paid(row)
    await ledger.lock_gift_card_accounts(session, list(cards_paid), now, into=accounts)
    returns = await repository.returns_of(session, row.id)
    movements: tuple[Movement, ...] = ()
    if row.ledger_transaction_id:
        ledger_ids = [row.ledger_transaction_id, *(r.ledger_transaction_id for r in returns if r.ledger_transaction_id)]
        movements = await ledger.reversal_movements(session, ledger_ids, kind="void",
                                                    origin=row.ledger_transaction_id)
        if cards_paid:  # each card gets back what the sale took from it and no return has given back yet
            out = await ledger.gift_card_net(session, ledger_ids)
            movements += tuple(Movement(account=gift_card_key(card_id), asset=GIFT_CARD, amount=-net,
                                        contra=giftcard_rules.SPENT, kind="void")
                               for card_id, net in sorted(out.items()) if net < 0)
    # Stamps: what the returns have not taken back yet goes now (revoking unused rewards it had earned).
    returned = _returned_quantities(returns)
    remaining = {ln["line_id"]: ln["quantity"] - returned.get(ln["line_id"], 0) for ln in row.lines}
    movements += await punch_service.take_back(
        session, row.member_id, row.id, _stamp_removals(row, returned, remaining),
        {kind: accounts.balance(kind) for kind in accounts.by_kind}, now, kind="void")
    movements += await punch_service.restore_redeemed(session, row.id, _balances_after(accounts, movements), now)
    await voucher_service.undo_sale(session, row.id, now, lambda sales: repository.spend_left(session, sales))
    if movements:
        await ledger.post(session, ledger.Posting(
            kind="void", member_id=row.member_id, at=now, movements=movements, store_id=row.store_id,
            reference=row.id, reverses_id=row.ledger_transaction_id), accounts)
    await tiers.record_void(session, row.id)
    await tiers.take_back_upgrade(session, row.member_id, row.id, await program_service.get(session), now)
    await personalization.record_void(session, row.member_id, row.id, row.occurred_at,
                                      row.qualifying_spend - sum(r.qualifying_spend for r in returns), now)
    if referral is not None:
        await referrals.reverse(session, referral, store_id=row.store_id, now=now)
    row.status = "voided"
    row.voided_at = now
    await session.flush()
    public = to_public(row, bonus_points=await _bonus_points(session, row), points_balance=accounts.balance(POINTS),
                       wallet_balance=await _wallet_balance(session, row.member_id),
                       rewards_issued=await punch_service.issued_by(session, row.id),
                       vouchers_issued=await voucher_service.issued_by(session, row.id, now))
    await events.emit(session, "transaction.voided", public.model_dump(mode="json", by_alias=True), at=now,
                      member_id=row.member_id)
    return public


def _balances_after(accounts: ledger.LockedAccounts, movements: Sequence[Movement]) -> dict[str, int]:
    """The locked accounts' balances as these movements (not yet posted) will leave them."""
    balances = {kind: accounts.balance(kind) for kind in accounts.by_kind}
    for movement in movements:
        if movement.account in balances:
            balances[movement.account] += movement.amount
    return balances


def _returned_quantities(returns: list[CheckoutReturn]) -> dict[str, int]:
    returned: dict[str, int] = defaultdict(int)
    for earlier in returns:
        for line in earlier.lines:
            returned[line["line_id"]] += line["quantity"]
    return dict(returned)


async def return_lines(session: AsyncSession, transaction_id: str, body: ReturnRequest, principal: Principal,
                       clock: Clock) -> ReturnPublic:
    """Return lines of a sale (everything returned so far is read under the sale's lock). A return slip number
    the sale already has is a 409 ``duplicate_return`` whatever else is wrong, as a duplicate receipt is."""
    row = await _load(session, transaction_id, principal, lock=True)
    previous = await repository.returns_of(session, row.id)
    same = next((r for r in previous if body.receipt_id is not None and r.receipt_id == body.receipt_id), None)
    if same is not None:
        raise DuplicateReturn(f"Return slip {body.receipt_id!r} was already taken for this sale, on "
                              f"{same.created_at:%Y-%m-%d %H:%M} UTC; nothing was returned again.", return_id=same.id)
    if row.status not in ("committed", "partially_returned"):
        raise TransactionNotReturnable(f"This transaction is {row.status.replace('_', ' ')}; nothing more can be "
                                       "returned.")
    now = clock.now()
    returned = _returned_quantities(previous)
    before = rules.ReturnTotals(
        points_clawed_back=sum(r.points_clawed_back for r in previous),
        points_refunded=sum(r.points_refunded for r in previous),
        qualifying_spend=sum(r.qualifying_spend for r in previous),
    )
    burned = rules.burned_by_line({ln["line_id"]: ln["points_discount"] for ln in row.lines}, row.points_burned)
    sold = [rules.SoldLine(ln["line_id"], ln["quantity"], ln["net"], Decimal(ln["points_earned"]),
                           burned[ln["line_id"]]) for ln in row.lines]
    plan = rules.plan_return(sold, returned, {ln.line_id: ln.quantity for ln in body.lines},
                             points_earned=row.points_earned, points_burned=row.points_burned, before=before)
    # What the sale gave beyond its lines' points goes too: everything of it when the last unit comes back (a
    # birthday bonus, a referral's), as a void would take it; a referral's alone once the sale's spend no longer
    # reaches the referral's first spend. Kept apart from the lines' figures, which later returns build on.
    spend_left = row.qualifying_spend - before.qualifying_spend - plan.qualifying_spend
    program = await program_service.get(session)
    lapsed = await referrals.lapsed_by_return(session, row.id, spend_left, program)
    # What the sale and its earlier returns moved on the program's side, read once for the points and the wallet.
    takes_points = bool(row.ledger_transaction_id) and bool(plan.points_clawed_back or plan.fully_returned
                                                            or lapsed is not None)
    sale_net, returns_net = {}, {}
    if takes_points or _wallet_paid(row):
        sale_net = await ledger.program_net(session, [row.ledger_transaction_id])
        returns_net = await ledger.program_net(session, [r.ledger_transaction_id for r in previous])
    wallet_back, cards_back = await _stored_value_refund(session, row, previous, sale_net, returns_net, before,
                                                         plan)
    removals = _stamp_removals(row, returned, {ln.line_id: ln.quantity for ln in body.lines})
    undo_referral = plan.fully_returned or lapsed is not None
    # The member's accounts, locked by every return, before a referrer's (referrals.lock_referrer) and the sale's
    # vouchers and the member's tier, in the order a commit and a void take them: a return that moved no balance
    # took no lock here, then locked a voucher the sale had earned and the tier after it, while the member's next
    # sale, holding the tier, waited for that voucher (a deadlock). And before the sale's points are weighed: the
    # expiry sweep takes points from the sale's lots under this lock, and what it took is not clawed back again.
    # Read before it, a return that waited here for the sweep clawed back the points the sweep had just expired,
    # and the member lost them twice.
    # The wallet's with them, as a sale's: the return's event tells the member's points and wallet after it.
    accounts = await ledger.lock_accounts(
        session, row.member_id, [*rules.EVERY_SALE_LOCKS, *(punch_rules.account_kind(p) for p in removals)], now)
    referral = await referrals.lock_referrer(session, row.id, now) if undo_referral else None
    await ledger.lock_gift_card_accounts(session, list(cards_back), now, into=accounts)
    clawed_back = 0
    if takes_points:
        points = await _sale_points(session, row, sale_net, returns_net, before)
        bonus_back = 0
        if plan.fully_returned or lapsed is not None:
            bonus_back = points.bonus_held if plan.fully_returned else min(lapsed.referee_points, points.bonus_held)
        clawed_back = min(plan.points_clawed_back + bonus_back, points.clawable)
    movements = []
    if clawed_back:
        movements.append(Movement(account=POINTS, asset=POINTS, amount=-clawed_back,
                                  contra=POINTS_ISSUED, kind="return", lots=LotPolicy.CLAWBACK,
                                  allow_negative=True, origin=row.ledger_transaction_id))
    if plan.points_refunded:
        movements.append(Movement(account=POINTS, asset=POINTS, amount=plan.points_refunded,
                                  contra="program:points_redeemed", kind="return", lots=LotPolicy.RESTORE,
                                  origin=row.ledger_transaction_id))
    for account, part, contra in ((WALLET_CASH, wallet_back.cash, wallet_rules.SPENT),
                                  (WALLET_BONUS, wallet_back.bonus, wallet_rules.BONUS_SPENT)):
        if part:
            movements.append(Movement(account=account, asset=account, amount=part, contra=contra, kind="return"))
    movements.extend(Movement(account=gift_card_key(card_id), asset=GIFT_CARD, amount=amount,
                              contra=giftcard_rules.SPENT, kind="return") for card_id, amount in cards_back.items())
    ret = CheckoutReturn(
        id=new_id("ret"), transaction_id=row.id, receipt_id=body.receipt_id,
        lines=[{"line_id": ln.line_id, "quantity": ln.quantity} for ln in body.lines],
        points_clawed_back=plan.points_clawed_back, points_refunded=plan.points_refunded,
        qualifying_spend=plan.qualifying_spend, created_at=now,
    )
    movements.extend(await punch_service.take_back(
        session, row.member_id, row.id, removals, {kind: accounts.balance(kind) for kind in accounts.by_kind},
        now, kind="return"))
    if movements:
        ret.ledger_transaction_id = await ledger.post(session, ledger.Posting(
            kind="return", member_id=row.member_id, at=now, movements=tuple(movements), store_id=row.store_id,
            reference=ret.id, reverses_id=row.ledger_transaction_id), accounts)
    await repository.add_return(session, ret)
    if plan.fully_returned:
        await personalization.record_full_return(session, row.member_id, row.id, now)
    if referral is not None:
        await referrals.reverse(session, referral, store_id=row.store_id, now=now)
    withdrawn = await voucher_service.withdraw_for_return(session, row.id, spend_left, now)
    await tiers.record_return(session, row.id, plan.qualifying_spend)
    await tiers.take_back_upgrade(session, row.member_id, row.id, program, now)
    await personalization.record_return(session, row.member_id, row.occurred_at, plan.qualifying_spend)
    row.status = "returned" if plan.fully_returned else "partially_returned"
    await session.flush()
    public = ReturnPublic(id=ret.id, transaction_id=row.id, receipt_id=ret.receipt_id, reversed=Reversed(
        points=clawed_back, points_refunded=plan.points_refunded, stamps=_stamps_public(removals),
        wallet=wallet_back.total, gift_cards=sum(cards_back.values()), qualifying_spend=plan.qualifying_spend,
        vouchers=withdrawn))
    await events.emit(session, "transaction.returned", {
        **public.model_dump(mode="json"), "member_id": row.member_id, "store_id": row.store_id,
        "receipt_id": row.receipt_id, "return_receipt_id": ret.receipt_id, "status": row.status, "lines": ret.lines,
        "ledger_transaction_id": ret.ledger_transaction_id,
        "balances_after": {"points": accounts.balance(POINTS),
                           "wallet": sum(accounts.balance(kind) for kind in WALLET_KINDS)}},
        at=now, member_id=row.member_id)
    return public


@dataclass(frozen=True, slots=True)
class _SalePoints:
    bonus_held: int  # what the sale issued beyond its lines' points that no return has taken back yet
    clawable: int  # what the sale issued that neither a return has taken back nor the sweep has expired


async def _sale_points(session: AsyncSession, row: CheckoutTransaction, sale_net: dict[str, int],
                       returns_net: dict[str, int], before: rules.ReturnTotals) -> _SalePoints:
    """What of the sale's points a return can still take back, from the ledger: what the sale issued (its lines'
    points and any bonus: a birthday's, a referred member's), less what earlier returns took (beyond their lines'
    figures: the bonus), less what expired from the sale's own lots (lost once already, so never clawed back)."""
    issued, taken = -sale_net.get(POINTS_ISSUED, 0), returns_net.get(POINTS_ISSUED, 0)
    expired = await ledger.points_expired_from(session, row.ledger_transaction_id)
    return _SalePoints(bonus_held=max(issued - row.points_earned - max(taken - before.points_clawed_back, 0), 0),
                       clawable=max(issued - taken - expired, 0))


async def _stored_value_refund(session: AsyncSession, row: CheckoutTransaction, previous: list[CheckoutReturn],
                               paid: dict[str, int], back: dict[str, int], before: rules.ReturnTotals,
                               plan: rules.ReturnPlan) -> tuple[wallet_rules.Split, dict[str, int]]:
    """What this return gives back to the wallet (per part) and to each gift card the sale was paid with, as one
    refund (``rules.stored_value_refund``). What the sale took from the wallet's parts and what earlier returns
    gave back to them is the program's side of their ledger transactions (``paid``, ``back``); what it took from
    each card is on the sale, what earlier returns gave back to the cards is read from the ledger."""
    parts: dict[str, int] = {}
    refunded: dict[str, int] = {}
    if _wallet_paid(row):
        for part, contra in ((WALLET_CASH, wallet_rules.SPENT), (WALLET_BONUS, wallet_rules.BONUS_SPENT)):
            parts[part], refunded[part] = paid.get(contra, 0), -back.get(contra, 0)
    by_card = _gift_cards_paid(row)
    cards = {gift_card_key(card_id): card_id for card_id in sorted(by_card)}
    if cards:
        cards_back = await ledger.gift_card_net(session, [r.ledger_transaction_id for r in previous])
        for key, card_id in cards.items():
            parts[key], refunded[key] = by_card[card_id], cards_back.get(card_id, 0)
    refund = rules.stored_value_refund(parts, refunded, net=row.net,
                                       returned_net=before.qualifying_spend + plan.qualifying_spend,
                                       fully=plan.fully_returned)
    return (wallet_rules.Split(refund.get(WALLET_CASH, 0), refund.get(WALLET_BONUS, 0)),
            {card_id: refund[key] for key, card_id in cards.items() if key in refund})
