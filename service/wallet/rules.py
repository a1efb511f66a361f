"""Wallet decisions as pure functions: the top-up bonus, how a payment splits over the cash and bonus parts, and
what a return gives back to each part.

The wallet is two ledger accounts: ``wallet_cash`` (money the member paid in) and ``wallet_bonus`` (granted by
top-up bonus rules). Each is its own asset so that every ledger transaction balances per part and a reversal
puts each amount back into the part it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.money import allocate

WALLET_CASH = "wallet_cash"
WALLET_BONUS = "wallet_bonus"
WALLET_KINDS = (WALLET_BONUS, WALLET_CASH)  # sorted: the order accounts are locked in

RECEIVED = "program:stored_value_received"  # cash paid in by top-ups
SPENT = "program:stored_value_spent"  # cash spent at the till
REFUNDED = "program:stored_value_refunded"  # cash paid back by a cash-out
BONUS_GRANTED = "program:bonus_granted"  # bonus granted by top-up rules
BONUS_SPENT = "program:bonus_spent"  # bonus spent at the till
BONUS_FORFEITED = "program:bonus_forfeited"  # bonus given up by a cash-out


@dataclass(frozen=True, slots=True)
class BonusRule:
    min_amount: int
    bonus: int


def top_up_bonus(amount: int, rules: Sequence[BonusRule]) -> int:
    """The bonus of the largest rule whose ``min_amount`` the top-up reaches (0 when none does)."""
    reached = [rule for rule in rules if amount >= rule.min_amount]
    return max(reached, key=lambda rule: rule.min_amount).bonus if reached else 0


@dataclass(frozen=True, slots=True)
class Split:
    cash: int
    bonus: int

    @property
    def total(self) -> int:
        return self.cash + self.bonus


def split_payment(amount: int, *, cash: int, bonus: int) -> Split:
    """Spend ``amount`` from cash and bonus in proportion to their balances; the two parts add up to ``amount``
    exactly (largest remainder). ``0 <= amount <= cash + bonus``."""
    cash_part, bonus_part = allocate(amount, [cash, bonus])
    return Split(cash_part, bonus_part)
