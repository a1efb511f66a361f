"""Points: balance and expiring lots, the member's ledger, admin adjustments, and the expiry sweep.
Every balance change goes through :func:`service.ledger.service.post`. Never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record as audit
from service.auth.rules import Principal, bound_store
from service.clock import Clock
from service.events import service as events
from service.ledger import repository as ledger_repository
from service.ledger import service as ledger
from service.ledger.rules import EXPIRY, POINTS, LotPolicy, Movement
from service.members import service as members_service
from service.points import rules
from service.points.errors import ZeroAdjustment
from service.points.schemas import (
    AdjustmentCreate,
    AdjustmentEntry,
    Expiring,
    LedgerEntryPublic,
    LedgerTransactionPublic,
    PointsPublic,
)
from service.program import service as program_service

EXPIRING_SHOWN = 20


async def balance(session: AsyncSession, member_id: str) -> int:
    """The member's points balance as last committed (no lock: for display and quotes)."""
    return (await ledger.balances(session, member_id)).get(POINTS, 0)


async def expiring(session: AsyncSession, member_id: str, *, after: datetime | None = None,
                   limit: int = EXPIRING_SHOWN) -> list[Expiring]:
    lots = await ledger.expiring_points(session, member_id, after=after, limit=limit)
    return [Expiring(amount=n, expires_at=at) for at, n in lots]


async def points(session: AsyncSession, member_id: str) -> PointsPublic:
    await members_service.get(session, member_id)
    return PointsPublic(balance=await balance(session, member_id), expiring=await expiring(session, member_id))


async def ledger_entries(session: AsyncSession, member_id: str, principal: Principal, *, before: int | None,
                         limit: int) -> list[LedgerEntryPublic]:
    """One page of the member's ledger entries, newest first (the route pages them). A pos key sees only the
    entries of its own store's ledger transactions (DESIGN §7: a key never reaches another store's transactions;
    as :func:`service.checkout.service.member_sales`): another store's sales, returns and top-ups are that
    store's, and entries of no store (an admin's adjustment or top-up, expiry, a cash-out) are the member's
    dealings with the program, which a till does not need (it reads the balance and expiring lots from
    ``/points``; the app and admin read the whole ledger)."""
    await members_service.get(session, member_id)
    rows = await ledger_repository.member_entries_page(session, member_id, store_id=bound_store(principal),
                                                       before=before, limit=limit)
    return [LedgerEntryPublic(id=str(e.id), transaction_id=e.transaction_id, account=account, amount=e.amount,
                              kind=PUBLISHED_KINDS.get(e.kind, e.kind), created_at=e.created_at, reason=reason)
            for e, account, reason in rows]


# An entry's kind as API.md names it, where the ledger writes another name: the wallet paying at the till is `pay`
# (written `wallet_pay` beside the cards' `gift_card_pay`, which no member's ledger shows).
PUBLISHED_KINDS = {"wallet_pay": "pay"}


async def adjust(session: AsyncSession, member_id: str, body: AdjustmentCreate, clock: Clock, *,
                 actor: str) -> LedgerTransactionPublic:
    """An admin's correction with a reason. A positive amount is a new lot (expiring like earned points); a
    negative one draws from the lots that expire first and may not take the balance below zero (a debt only
    arises from returning points already spent). An erased member's points can be written off, not added to."""
    if body.amount == 0:
        raise ZeroAdjustment("amount must not be 0.", errors=[{"loc": ["body", "amount"], "msg": "must not be 0"}])
    member = await members_service.get(session, member_id)
    program = await program_service.get(session)
    now = clock.now()
    accounts = await ledger.lock_accounts(session, member.id, [POINTS], now)
    if body.amount > 0:
        await members_service.get_taking_value(session, member_id)
    movement = Movement(
        account=POINTS, asset=POINTS, amount=body.amount, contra="program:points_adjusted", kind="adjust",
        lots=LotPolicy.NEW if body.amount > 0 else LotPolicy.FIFO,
        expires_at=rules.lot_expiry(now, program.points_expiry_months) if body.amount > 0 else None,
    )
    transaction_id = await ledger.post(session, ledger.Posting(
        kind="adjustment", member_id=member.id, at=now, movements=(movement,), reason=body.reason), accounts)
    await audit(session, clock, actor=actor, action="points.adjusted", target=member.id,
                data={"amount": body.amount, "reason": body.reason, "ledger_transaction_id": transaction_id})
    await events.emit(session, "points.adjusted", {
        "member_id": member.id, "amount": body.amount, "reason": body.reason, "ledger_transaction_id": transaction_id,
        "balance": accounts.balance(POINTS)}, at=now, member_id=member.id)
    return LedgerTransactionPublic(
        id=transaction_id, kind="adjustment", member_id=member.id, reason=body.reason, created_at=now,
        entries=[AdjustmentEntry(account=POINTS, amount=body.amount, kind="adjust"),
                 AdjustmentEntry(account="program:points_adjusted", amount=-body.amount, kind="adjust")],
        balances_after={POINTS: accounts.balance(POINTS)},
    )


@dataclass(frozen=True, slots=True)
class SweepResult:
    members: int = 0
    lots: int = 0
    points: int = 0
    busy: int = 0  # members left for the next batch: a sale or return of theirs held their accounts


async def sweep_batch(session: AsyncSession, as_of: datetime, now: datetime, *, limit: int = 200) -> SweepResult:
    """Expire what remains in lots past ``expires_at`` for up to ``limit`` members: one ledger transaction per
    member (``expire`` entries against ``program:points_expired``). A lot once expired holds nothing, so running
    again changes nothing. A member whose accounts another transaction holds is left for the next batch
    (``busy``), not waited for (:func:`service.ledger.service.lock_accounts_if_free`)."""
    await ledger.ensure_program_accounts(session, now)
    members = lots = total = busy = 0
    for member_id in await ledger_repository.members_with_expired_lots(session, as_of, limit=limit):
        accounts = await ledger.lock_accounts_if_free(session, member_id, [POINTS])
        if accounts is None:
            busy += 1
            continue
        expired = await ledger_repository.expired_lots_of(session, member_id, as_of)  # read again under the lock
        amount = sum(lot.remaining for lot in expired)
        if amount <= 0:
            continue
        movement = Movement(account=POINTS, asset=POINTS, amount=-amount, contra="program:points_expired",
                            kind="expire", lots=LotPolicy.SPECIFIC, lot_ids=tuple(lot.id for lot in expired))
        transaction_id = await ledger.post(session, ledger.Posting(
            kind=EXPIRY, member_id=member_id, at=now, movements=(movement,),
            reason=f"expired as of {as_of.isoformat()}"), accounts)
        await events.emit(session, "points.expired", {
            "member_id": member_id, "points": amount, "as_of": as_of, "ledger_transaction_id": transaction_id,
            "balance": accounts.balance(POINTS)}, at=now, member_id=member_id)
        members, lots, total = members + 1, lots + len(expired), total + amount
    return SweepResult(members, lots, total, busy)
