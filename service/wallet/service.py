"""The member wallet: balances, top-ups with bonus, cash-out, and the liability report. Every balance moves
through :mod:`service.ledger.service`; spending at the till is the checkout's :class:`WalletTender`. Never
commits."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record as audit
from service.auth.rules import Principal
from service.clock import Clock
from service.events import service as events
from service.giftcards import service as giftcards
from service.ledger import service as ledger
from service.ledger.rules import POINTS, Movement
from service.members import service as members_service
from service.program import service as program_service
from service.wallet import repository, rules
from service.wallet.rules import WALLET_BONUS, WALLET_CASH, WALLET_KINDS
from service.wallet.schemas import CashOutPublic, LiabilityPublic, TopUpCreate, TopUpPublic, WalletPublic


async def wallet(session: AsyncSession, member_id: str) -> WalletPublic:
    await members_service.get(session, member_id)
    program = await program_service.get(session)
    held = await ledger.balances(session, member_id)
    cash, bonus = held.get(WALLET_CASH, 0), held.get(WALLET_BONUS, 0)
    return WalletPublic(cash=cash, bonus=bonus, total=cash + bonus, currency=program.currency)


async def top_up(session: AsyncSession, member_id: str, body: TopUpCreate, principal: Principal,
                 clock: Clock) -> TopUpPublic:
    """Cash in, plus the bonus of the largest rule the amount reaches. Top-ups never earn points; an erased
    member takes none (409 ``member_erased``). One made with an admin key is written to the audit log."""
    await members_service.get(session, member_id)
    program = await program_service.get(session)
    bonus = rules.top_up_bonus(body.amount, [rules.BonusRule(b.min_amount, b.bonus)
                                             for b in program.wallet_top_up_bonuses])
    now = clock.now()
    accounts = await ledger.lock_accounts(session, member_id, WALLET_KINDS, now)
    await members_service.get_taking_value(session, member_id)
    movements = [Movement(account=WALLET_CASH, asset=WALLET_CASH, amount=body.amount, contra=rules.RECEIVED,
                          kind="top_up")]
    if bonus:
        movements.append(Movement(account=WALLET_BONUS, asset=WALLET_BONUS, amount=bonus, contra=rules.BONUS_GRANTED,
                                  kind="top_up_bonus"))
    transaction_id = await ledger.post(session, ledger.Posting(
        kind="top_up", member_id=member_id, at=now, movements=tuple(movements), store_id=principal.store_id,
        reference=body.payment_ref), accounts)
    cash, held_bonus = accounts.balance(WALLET_CASH), accounts.balance(WALLET_BONUS)
    if principal.role == "admin":  # a till's top-up is a sale of stored value; an admin's is a change
        await audit(session, clock, actor=principal.key_id, action="wallet.topped_up", target=member_id,
                    data={"amount": body.amount, "bonus": bonus, "payment_ref": body.payment_ref,
                          "ledger_transaction_id": transaction_id})
    await events.emit(session, "wallet.topped_up", {
        "member_id": member_id, "amount": body.amount, "bonus": bonus, "payment_ref": body.payment_ref,
        "store_id": principal.store_id, "ledger_transaction_id": transaction_id,
        "wallet": {"cash": cash, "bonus": held_bonus, "total": cash + held_bonus}}, at=now, member_id=member_id)
    return TopUpPublic(cash=cash, bonus=held_bonus, total=cash + held_bonus, bonus_granted=bonus)


async def cash_out(session: AsyncSession, member_id: str, clock: Clock, *, actor: str) -> CashOutPublic:
    """Pay the cash part back (closing the wallet, a legal refund); the bonus part is forfeited, as entries
    against ``program:bonus_forfeited``. An erased member's wallet can still be paid back. Written to the audit
    log (only an admin may cash out)."""
    await members_service.get(session, member_id)
    now = clock.now()
    accounts = await ledger.lock_accounts(session, member_id, WALLET_KINDS, now)
    cash, bonus = accounts.balance(WALLET_CASH), accounts.balance(WALLET_BONUS)
    movements = [m for m in (
        Movement(account=WALLET_CASH, asset=WALLET_CASH, amount=-cash, contra=rules.REFUNDED, kind="cash_out"),
        Movement(account=WALLET_BONUS, asset=WALLET_BONUS, amount=-bonus, contra=rules.BONUS_FORFEITED,
                 kind="forfeit"),
    ) if m.amount]
    if movements:
        transaction_id = await ledger.post(session, ledger.Posting(kind="cash_out", member_id=member_id, at=now,
                                                                   movements=tuple(movements)), accounts)
        await audit(session, clock, actor=actor, action="wallet.cashed_out", target=member_id,
                    data={"cash_paid": cash, "bonus_forfeited": bonus, "ledger_transaction_id": transaction_id})
        await events.emit(session, "wallet.cashed_out", {
            "member_id": member_id, "cash_paid": cash, "bonus_forfeited": bonus,
            "ledger_transaction_id": transaction_id, "wallet": {"cash": 0, "bonus": 0, "total": 0}},
            at=now, member_id=member_id)
    return CashOutPublic(cash_paid=cash, bonus_forfeited=bonus, cash=0, bonus=0, total=0)


async def liability(session: AsyncSession) -> LiabilityPublic:
    program = await program_service.get(session)
    held = await repository.held_by_kind(session, [POINTS, WALLET_CASH, WALLET_BONUS])
    gift_cards, gift_cards_count = await giftcards.outstanding(session)
    points = held.get(POINTS, 0)
    return LiabilityPublic(points_outstanding=points, points_value=points * program.point_value,
                           wallet_cash=held.get(WALLET_CASH, 0), wallet_bonus=held.get(WALLET_BONUS, 0),
                           gift_cards=gift_cards, gift_cards_count=gift_cards_count)
