"""Referral decisions, pure.

A referred member's first committed sale whose net reaches ``referral.min_first_spend`` rewards both sides once:
``referee_points`` to the referred member (posted with that sale), ``referrer_points`` to the member whose code
they enrolled with (unless that member has since been erased). Voiding that sale takes both back, and a later
qualifying sale may reward again. A member may not refer themselves (the same phone or email), and the codes of
erased members are refused.
"""

from __future__ import annotations


def reward_due(net: int, min_first_spend: int, *, already_rewarded: bool, referrer_points: int,
               referee_points: int) -> bool:
    return not already_rewarded and net >= min_first_spend and (referrer_points > 0 or referee_points > 0)


def may_credit_referrer(subtotal: int, min_first_spend: int, *, already_rewarded: bool, referrer_points: int) -> bool:
    """Whether a sale of this subtotal may turn out to credit the referrer (:func:`reward_due`, with points for
    the referrer): its net, known once the sale is priced, is at most its subtotal."""
    return not already_rewarded and subtotal >= min_first_spend and referrer_points > 0


def reward_stands(net_left: int, min_first_spend: int) -> bool:
    """Whether the sale that rewarded a referral still is a qualifying first purchase after its returns."""
    return net_left >= min_first_spend


def self_referral(referrer_contacts: tuple[str | None, ...], own_contacts: tuple[str | None, ...]) -> bool:
    """The referrer shares a phone or email with the member enrolling: the same person."""
    return any(a is not None and a == b for a, b in zip(referrer_contacts, own_contacts, strict=True))
