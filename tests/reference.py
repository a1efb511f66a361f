"""Reference arithmetic the model-based tests (``test_stateful``, ``test_quote_commit``) check the service
against: written from DESIGN.md's rounding rules, independently of ``service.money``, so a slip in either shows."""

from __future__ import annotations

from fractions import Fraction
from math import floor


def half_up(value: Fraction) -> int:
    """Round half up (every figure rounded here is at least zero)."""
    return floor(value + Fraction(1, 2))


def shares(amount: int, *weights: int) -> list[int]:
    """``amount`` over parts in proportion to their ``weights``, each share rounded half up, the off-by-ones
    corrected on the shares whose exact value was nearest to rounding the other way (ties: the earlier part)."""
    total = sum(weights)
    if amount == 0 or total == 0:
        return [0 for _ in weights]
    exact = [Fraction(amount * w, total) for w in weights]
    got = [min(half_up(x), w) for x, w in zip(exact, weights, strict=True)]
    diff = amount - sum(got)
    order = range(len(weights))
    if diff > 0:
        for i in sorted(order, key=lambda i: (got[i] - exact[i], i)):
            room = min(weights[i] - got[i], diff)
            got[i], diff = got[i] + room, diff - room
    elif diff < 0:
        for i in sorted(order, key=lambda i: (exact[i] - got[i], i)):
            room = min(got[i], -diff)
            got[i], diff = got[i] - room, diff + room
    return got
