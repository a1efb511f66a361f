"""Ledger decisions as pure functions: movements and their legs, which lots a debit draws from, how much of a
credit goes into lots when the balance is negative.

Sign convention: a member account is a liability of the program (credit-normal), stored so that a positive
``amount`` adds to the member's balance. Its counterpart, a program account (``program:points_issued`` …),
receives the opposite amount, so each movement is balanced by construction and every ledger transaction sums
to zero per asset.

Lots and the balance: the points in open lots always equal ``max(balance, 0)``. A balance below zero (points
clawed back after they were spent) is a debt: every lot is empty and later credits repay the debt before
filling a lot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

POINTS = "points"
GIFT_CARD = "gift_card"  # the account kind of every gift card, and its asset
STORED_VALUE_KINDS = frozenset({"wallet_cash", "wallet_bonus", GIFT_CARD})
EXPIRY = "expiry"  # the kind of the sweep's postings: what they draw from a lot expired


def gift_card_key(gift_card_id: str) -> str:
    """How movements and locked accounts name a gift card's account (a member's are named by their kind; several
    gift cards can move in one posting)."""
    return f"{GIFT_CARD}:{gift_card_id}"


class LotPolicy(StrEnum):
    """How a points movement touches the lots."""

    NEW = "new"  # credit: a new lot (earning, a positive adjustment)
    RESTORE = "restore"  # credit: put back what the origin transaction drew, into the very same lots
    FIFO = "fifo"  # debit: draw from the lots that expire first (burning, a negative adjustment)
    CLAWBACK = "clawback"  # debit: the origin's own lot first, then FIFO, then debt (returns, voids)
    SPECIFIC = "specific"  # debit: exactly the named lots (expiry)
    NONE = "none"  # not a points movement


@dataclass(frozen=True, slots=True)
class Movement:
    """``amount`` into the member's ``account`` (signed) and ``-amount`` into the program's ``contra``."""

    account: str
    asset: str
    amount: int
    contra: str
    kind: str
    lots: LotPolicy = LotPolicy.NONE
    allow_negative: bool = False
    origin: str | None = None  # the ledger transaction whose lots a RESTORE/CLAWBACK refers to
    lot_ids: tuple[int, ...] = ()  # for SPECIFIC
    earned_at: datetime | None = None  # for NEW (default: the posting's time)
    expires_at: datetime | None = None  # for NEW


@dataclass(frozen=True, slots=True)
class Leg:
    account: str  # "member" account kind or a program account id
    asset: str
    amount: int
    kind: str
    member_side: bool


def legs(movement: Movement) -> tuple[Leg, Leg]:
    return (Leg(movement.account, movement.asset, movement.amount, movement.kind, True),
            Leg(movement.contra, movement.asset, -movement.amount, movement.kind, False))


def unbalanced_assets(entries: Iterable[tuple[str, int]]) -> dict[str, int]:
    """``{asset: sum}`` for every asset whose amounts do not sum to zero."""
    sums: dict[str, int] = defaultdict(int)
    for asset, amount in entries:
        sums[asset] += amount
    return {asset: total for asset, total in sums.items() if total != 0}


@dataclass(frozen=True, slots=True)
class Lot:
    id: int
    expires_at: datetime | None
    remaining: int
    transaction_id: str


def expiry_order(lot: Lot) -> tuple[int, datetime | int, int]:
    """Soonest-expiring first; lots that never expire last; ties by age."""
    return (1, 0, lot.id) if lot.expires_at is None else (0, lot.expires_at, lot.id)


def plan_draws(lots: Sequence[Lot], amount: int, *, prefer_transaction: str | None = None) -> list[tuple[int, int]]:
    """``[(lot_id, drawn)]`` taking up to ``amount`` points: first from the lots ``prefer_transaction`` created,
    then soonest-expiring first. Draws less than ``amount`` when the lots hold less (the rest is debt)."""
    ordered = sorted(lots, key=lambda lot: (lot.transaction_id != prefer_transaction, *expiry_order(lot)))
    draws = []
    left = amount
    for lot in ordered:
        if left <= 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            draws.append((lot.id, take))
            left -= take
    return draws


def lot_share_of_credit(balance_before: int, amount: int) -> int:
    """How much of a credit goes into lots: what is left after repaying a debt (a negative balance)."""
    return max(0, min(amount, balance_before + amount))


def plan_restore(outstanding: Sequence[tuple[int, int]], amount: int) -> tuple[list[tuple[int, int]], int]:
    """Put ``amount`` back into the lots an earlier debit drew from (``outstanding``: ``(lot_id, drawn and not
    yet restored)``, in the order to refill). Returns the restorations and what did not fit (normally 0)."""
    restored = []
    left = amount
    for lot_id, drawn in outstanding:
        if left <= 0:
            break
        give = min(drawn, left)
        if give > 0:
            restored.append((lot_id, give))
            left -= give
    return restored, left


@dataclass(frozen=True, slots=True)
class NewLot:
    amount: int
    earned_at: datetime | None  # None: the posting's time
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Draw:
    """``amount`` taken from a lot (negative: put back). ``origin`` is the ledger transaction whose draw this
    is: ``None`` for the posting's own transaction, the original debit's id when a draw is put back."""

    lot_id: int
    amount: int
    origin: str | None = None


@dataclass
class LotBook:
    """A working copy of a member's lots while one posting changes them: which lots change, which are new, and
    the draws to record. Keeps ``sum(remaining) == max(balance, 0)`` when it held before."""

    lots: dict[int, Lot]
    # (origin ledger transaction, lot id, drawn and not yet put back), for RESTORE movements
    outstanding: list[tuple[str, int, int]] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)
    new_lots: list[NewLot] = field(default_factory=list)
    draws: list[Draw] = field(default_factory=list)

    def remaining_changes(self) -> dict[int, int]:
        return {lot_id: self.lots[lot_id].remaining for lot_id in sorted(self.changed)}

    def _move(self, lot_id: int, delta: int, origin: str | None = None) -> None:
        lot = self.lots[lot_id]
        self.lots[lot_id] = replace(lot, remaining=lot.remaining + delta)
        self.changed.add(lot_id)
        self.draws.append(Draw(lot_id, -delta, origin))

    def apply(self, movement: Movement, balance_before: int) -> None:
        amount = movement.amount
        policy = movement.lots
        if policy is LotPolicy.NEW:
            share = lot_share_of_credit(balance_before, amount)
            if share > 0:
                self.new_lots.append(NewLot(share, movement.earned_at, movement.expires_at))
        elif policy is LotPolicy.RESTORE:
            share = lot_share_of_credit(balance_before, amount)
            mine = [(lot_id, n) for origin, lot_id, n in self.outstanding if origin == movement.origin]
            restored, left = plan_restore(mine, share)
            given = dict(restored)
            for lot_id, n in restored:
                self._move(lot_id, n, origin=movement.origin)
            self.outstanding = [(o, lot_id, n - given.get(lot_id, 0) if o == movement.origin else n)
                                for o, lot_id, n in self.outstanding]
            if left > 0:
                self.new_lots.append(NewLot(left, None, movement.expires_at))
        elif policy is LotPolicy.SPECIFIC:
            wanted = set(movement.lot_ids)
            for lot_id, n in plan_draws([lot for lot in self.lots.values() if lot.id in wanted], -amount):
                self._move(lot_id, -n)
        elif policy in (LotPolicy.FIFO, LotPolicy.CLAWBACK):
            prefer = movement.origin if policy is LotPolicy.CLAWBACK else None
            for lot_id, n in plan_draws(list(self.lots.values()), -amount, prefer_transaction=prefer):
                self._move(lot_id, -n)
