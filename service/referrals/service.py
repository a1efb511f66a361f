"""Referral rewards, inside the checkout's transactions. Never commits.

The commit asks :func:`pending` right after the member's lock (only for a referred member: nobody else pays a
query) and :func:`due` once the sale is priced, posts the referred member's points with the sale and then calls
:func:`record`, which credits the referrer in a ledger transaction of their own (``kind="referral"``,
referencing the sale). :func:`reverse` undoes the referrer's side when that sale is
voided, returned in full, or returned below the first spend (:func:`lapsed_by_return`); the referred member's
side goes with the sale's entries, or with the return's claw-back. The referrer's balance moves outside the
sale's own events, so each side of theirs is an event of its own, in the same transaction: ``referral.rewarded``
and ``referral.reversed`` (a receiver keeping balances from events would be off otherwise).
The referred member's ledger lock (held by the commit or void) serializes these decisions; the referrer always
enrolled before the referred member, so locking the referrer's accounts right after the member's, before anything
else the referrer's own sale locks (:func:`pending`, :func:`lock_referrer`), can never close a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service.events import service as events
from service.ledger import service as ledger
from service.ledger.rules import POINTS, LotPolicy, Movement
from service.members import repository as members_repository
from service.members.models import Member
from service.points.rules import lot_expiry
from service.program.schemas import ProgramPublic
from service.referrals import repository, rules
from service.referrals.models import ReferralReward

KIND = "referral_bonus"


@dataclass(frozen=True)
class Pending:
    """A referred member's referral as their sale finds it under the member's lock (:func:`pending`)."""

    referrer_id: str
    row: ReferralReward | None  # None before any reward; a reward reversed by a void may be used again
    referrer_accounts: ledger.LockedAccounts | None  # the referrer's points account, locked when the sale may credit it

    @property
    def rewarded(self) -> bool:
        return self.row is not None and self.row.status == "rewarded"


@dataclass(frozen=True)
class Due:
    referrer_id: str
    referee_points: int
    referrer_points: int
    row: ReferralReward | None  # a reward reversed by an earlier void, to be used again
    referrer_accounts: ledger.LockedAccounts | None

    def movements(self, occurred_at: datetime, program: ProgramPublic) -> tuple[Movement, ...]:
        """The referred member's side, posted with the sale."""
        if self.referee_points <= 0:
            return ()
        return (_credit(self.referee_points, occurred_at, program),)


def _credit(points: int, at: datetime, program: ProgramPublic) -> Movement:
    return Movement(account=POINTS, asset=POINTS, amount=points, contra="program:points_issued", kind=KIND,
                    lots=LotPolicy.NEW, earned_at=at, expires_at=lot_expiry(at, program.points_expiry_months))


async def pending(session: AsyncSession, member: Member, program: ProgramPublic, subtotal: int,
                  now: datetime) -> Pending | None:
    """For a referred member's sale (nobody else's pays a query), right after the member's accounts are locked and
    before anything else: the referral's row, and the referrer's points account locked if this sale may credit it.
    The one lock order: the member's accounts, the referrer's, then the gift cards, vouchers and campaigns. The
    referrer's own sale locks those after the referrer's accounts; locked after them here, each could hold what
    the other waits for (a gift card or a bearer code both use, a campaign both issue from)."""
    if member.referred_by is None:
        return None
    found = Pending(member.referred_by, await repository.get(session, member.id), None)
    settings = program.referral
    if not rules.may_credit_referrer(subtotal, settings.min_first_spend, already_rewarded=found.rewarded,
                                     referrer_points=settings.referrer_points):
        return found
    return replace(found, referrer_accounts=await ledger.lock_accounts(session, member.referred_by, [POINTS], now))


def due(found: Pending | None, program: ProgramPublic, net: int) -> Due | None:
    """The reward the priced sale (``net``) earns, if any."""
    if found is None:
        return None
    settings = program.referral
    if not rules.reward_due(net, settings.min_first_spend, already_rewarded=found.rewarded,
                            referrer_points=settings.referrer_points, referee_points=settings.referee_points):
        return None
    return Due(found.referrer_id, settings.referee_points, settings.referrer_points, found.row,
               found.referrer_accounts)


async def record(session: AsyncSession, member: Member, reward: Due, program: ProgramPublic, *,
                 transaction_id: str, store_id: str, now: datetime) -> None:
    """Mark the referral rewarded by this sale and credit the referrer, unless they were erased since: their
    status is read under a share lock after their accounts' (as ``members.service.get_taking_value`` reads it),
    so an erasure in progress is waited for and seen."""
    referrer_points, ledger_id = 0, None
    if reward.referrer_points > 0:
        # Locked by pending (a net that reaches the first spend had a subtotal that did).
        accounts = reward.referrer_accounts or await ledger.lock_accounts(session, reward.referrer_id, [POINTS], now)
        if await members_repository.status_shared(session, reward.referrer_id) == "active":
            referrer_points = reward.referrer_points
    if referrer_points > 0:
        ledger_id = await ledger.post(session, ledger.Posting(
            kind="referral", member_id=reward.referrer_id, at=now, movements=(_credit(referrer_points, now, program),),
            store_id=store_id, reference=transaction_id, reason=f"referred {member.id}"), accounts)
        await events.emit(session, "referral.rewarded", {
            "member_id": reward.referrer_id, "referred_member_id": member.id, "points": referrer_points,
            "transaction_id": transaction_id, "ledger_transaction_id": ledger_id,
            "balance": accounts.balance(POINTS)}, at=now, member_id=reward.referrer_id)
    row = reward.row or ReferralReward(referee_id=member.id, referrer_id=reward.referrer_id, status="rewarded",
                                       transaction_id=transaction_id, referee_points=0, referrer_points=0,
                                       updated_at=now)
    row.status, row.transaction_id, row.updated_at = "rewarded", transaction_id, now
    row.referee_points, row.referrer_points, row.referrer_ledger_transaction_id = (
        reward.referee_points, referrer_points, ledger_id)
    row.min_first_spend = program.referral.min_first_spend
    if reward.row is None:
        repository.add(session, row)


async def lapsed_by_return(session: AsyncSession, transaction_id: str, net_left: int,
                           program: ProgramPublic) -> ReferralReward | None:
    """The referral the sale rewarded, if its returns have left it short of the first spend it qualified under
    (the program's at the time, kept on the reward: one raised since would have a 1.00 return take back a
    referral the sale still earns), None otherwise. The caller takes the referred member's points back and
    :func:`reverse` the referrer's."""
    row = await repository.rewarded_by(session, transaction_id)
    if row is None:
        return None
    threshold = program.referral.min_first_spend if row.min_first_spend is None else row.min_first_spend
    return None if rules.reward_stands(net_left, threshold) else row


async def lock_referrer(session: AsyncSession, transaction_id: str, now: datetime) -> ReferralReward | None:
    """The referral this sale rewarded, if any, with the referrer's points account locked: a void or return that
    will :func:`reverse` it takes the lock right after the referred member's accounts, before the gift cards,
    vouchers and campaigns it changes. The referrer's own sale locks those after the referrer's accounts; taken
    in the other order, each waited for the other (a deadlock PostgreSQL breaks after a second)."""
    row = await repository.rewarded_by(session, transaction_id)
    if row is not None and row.referrer_ledger_transaction_id:
        await ledger.lock_accounts(session, row.referrer_id, [POINTS], now)
    return row


async def reverse(session: AsyncSession, row: ReferralReward, *, store_id: str, now: datetime) -> None:
    """Undoing the sale that rewarded a referral (``row``, from :func:`lock_referrer`: a void, or a return as
    above) takes the referrer's points back; a later qualifying sale may reward again."""
    if row.referrer_ledger_transaction_id:
        accounts = await ledger.lock_accounts(session, row.referrer_id, [POINTS], now)  # held: no wait
        movements = await ledger.reversal_movements(session, [row.referrer_ledger_transaction_id], kind="void",
                                                    origin=row.referrer_ledger_transaction_id)
        ledger_id = await ledger.post(session, ledger.Posting(
            kind="void", member_id=row.referrer_id, at=now, movements=movements, store_id=store_id,
            reference=row.transaction_id, reverses_id=row.referrer_ledger_transaction_id,
            reason=f"referral of {row.referee_id} undone"), accounts)
        taken = -sum(m.amount for m in movements if m.asset == POINTS)  # less what the sweep expired meanwhile
        if taken:
            await events.emit(session, "referral.reversed", {
                "member_id": row.referrer_id, "referred_member_id": row.referee_id, "points": taken,
                "transaction_id": row.transaction_id, "ledger_transaction_id": ledger_id,
                "reverses_ledger_transaction_id": row.referrer_ledger_transaction_id,
                "balance": accounts.balance(POINTS)}, at=now, member_id=row.referrer_id)
    row.status, row.updated_at = "reversed", now
