"""Decisions about the program's configuration."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

from service.money import format_amount


class TierLike(Protocol):
    code: str
    min_qualifying_spend: int


def tier_code_of(tiers: Sequence[TierLike], code: str | None) -> str:
    """A member's tier on the ladder as it stands: a code the ladder no longer has (a tier taken off it), or none,
    is the first tier. Everything that tells or uses a member's tier reads it through this, so that a member has
    one tier everywhere (until 2026-12-08 a member of a tier taken off the ladder was priced at the first tier and
    shown, and matched by voucher audiences, as the old one)."""
    return code if any(t.code == code for t in tiers) else tiers[0].code


def tier_ladder_problems(tiers: Sequence[TierLike]) -> list[str]:
    """What is wrong with a tier ladder: it must start at 0, rise strictly, and use each code once."""
    problems = []
    if tiers and tiers[0].min_qualifying_spend != 0:
        problems.append("the first tier must have min_qualifying_spend 0")
    for lower, higher in itertools.pairwise(tiers):
        if higher.min_qualifying_spend <= lower.min_qualifying_spend:
            problems.append(f"tier {higher.code!r} must need more spend than {lower.code!r} (tiers ascend)")
    codes = [t.code for t in tiers]
    if len(set(codes)) != len(codes):
        problems.append("tier codes must be unique")
    return problems


def currency_change_problem(current: str, new: str, stored_value_held: int, owed_back: int = 0) -> str | None:
    """Why the program's currency may not change now: wallets and gift cards hold amounts in minor units of the
    current currency, and a change would restate every one of them in the new one; so would the void or return
    of a sale they paid (``owed_back``: a card spent to nothing, the currency changed, the sale voided, and the
    card held 1000 JPY for 10.00 USD). Points are not money: an admin changes ``point_value`` with the currency.
    None when the change may go ahead."""
    if new == current or (stored_value_held <= 0 and owed_back <= 0):
        return None
    if stored_value_held > 0:
        return (f"Wallets and gift cards hold {format_amount(stored_value_held, current)}: pay them out (cash-outs, "
                f"gift cards spent) before changing the currency from {current} to {new}.")
    return (f"Sales paid {format_amount(owed_back, current)} from wallets and gift cards that their voids or "
            f"returns would give back in {current}: the currency cannot change from {current} to {new} while "
            "they can.")


def default_config(currency: str) -> dict:
    """The program a fresh deployment starts with: 1 point per major unit, a point worth 1 minor unit, three
    tiers over 12 months, points expiring after 12 months."""
    return {
        "currency": currency,
        "point_value": 1,
        "max_burn_percent": 100,
        "earn": {"base_rate_per_major_unit": 1, "category_multipliers": {}, "sku_multipliers": {},
                 "bonus_events": []},
        "points_expiry_months": 12,
        "tiers": [
            {"code": "member", "name": "Member", "min_qualifying_spend": 0, "earn_multiplier": 1,
             "discount_percent": 0, "perks": []},
            {"code": "silver", "name": "Silver", "min_qualifying_spend": 50_000, "earn_multiplier": 1.25,
             "discount_percent": 0, "perks": ["Birthday treat"]},
            {"code": "gold", "name": "Gold", "min_qualifying_spend": 150_000, "earn_multiplier": 1.5,
             "discount_percent": 5, "perks": ["Birthday treat", "Free delivery"]},
        ],
        "tier_window_months": 12,
        "wallet_top_up_bonuses": [],
        "referral": {"referrer_points": 500, "referee_points": 500, "min_first_spend": 2_000},
        "greetings": {},
    }
