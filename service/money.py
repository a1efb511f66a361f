"""Money is an integer count of minor units (``1250`` is 12.50). Multipliers may be ``Decimal``; results are
rounded once, with :func:`round_half_up`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction

# Amounts and quantities are capped well inside 64 bits so that sums of many of them still fit.
MAX_AMOUNT = 10**12  # 10 billion in major units of a two-decimal currency
MAX_QUANTITY = 10**6


def round_half_up(value: Decimal | Fraction) -> int:
    """Round to the nearest integer, halves away from zero (2.5 -> 3, -2.5 -> -3).

    Python's ``round()`` rounds halves to even (``round(2.5) == 2``), which is not what a receipt does. A
    ``Fraction`` (a sum of thirds, exactly) is rounded exactly too.
    """
    if isinstance(value, Fraction):
        return math.floor(value + Fraction(1, 2)) if value >= 0 else -math.floor(-value + Fraction(1, 2))
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def floor(value: Decimal | Fraction) -> int:
    """Round down towards minus infinity."""
    if isinstance(value, Fraction):
        return math.floor(value)
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """A multiplier as given in JSON (``1.5``) as an exact decimal (``Decimal("1.5")``, not the binary float)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def format_amount(minor: int, currency: str, exponent: int = 2) -> str:
    """``format_amount(1250, "USD") == "12.50 USD"``, for messages a cashier reads out."""
    sign = "-" if minor < 0 else ""
    major, rest = divmod(abs(minor), 10**exponent)
    return f"{sign}{major}.{rest:0{exponent}d} {currency}" if exponent else f"{sign}{major} {currency}"


# ISO 4217 active codes and the number of digits after the decimal point of each (its minor unit).
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF "
    "CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ "
    "GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK "
    "MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB "
    "SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN "
    "UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)
CURRENCY_EXPONENTS: dict[str, int] = {
    code: exponent
    for exponent, codes in ((0, _EXPONENT_0), (2, _EXPONENT_2), (3, _EXPONENT_3), (4, _EXPONENT_4))
    for code in codes.split()
}


def is_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def currency_exponent(code: str) -> int:
    return CURRENCY_EXPONENTS.get(code, 2)


def allocate(amount: int, weights: list[int] | tuple[int, ...]) -> list[int]:
    """Spread ``amount`` minor units over lines in proportion to ``weights`` (their nets), rounding each share
    half up once and then correcting the few that rounding pushed the total off, so that the shares sum to
    ``amount`` exactly and no share exceeds its weight (no line goes below zero). ``0 <= amount <= sum(weights)``.

    The correction goes to the lines whose exact share was closest to rounding the other way (largest
    remainder), ties to the earlier line.
    """
    total = sum(weights)
    if not 0 <= amount <= total:
        raise ValueError(f"cannot spread {amount} over weights summing to {total}")
    if amount == 0 or total == 0:
        return [0 for _ in weights]
    exact = [Decimal(amount) * w / total for w in weights]
    shares = [min(round_half_up(x), w) for x, w in zip(exact, weights, strict=True)]
    diff = amount - sum(shares)
    order = range(len(weights))
    if diff > 0:
        for i in sorted(order, key=lambda i: (shares[i] - exact[i], i)):
            if diff == 0:
                break
            room = min(weights[i] - shares[i], diff)
            shares[i] += room
            diff -= room
    elif diff < 0:
        for i in sorted(order, key=lambda i: (exact[i] - shares[i], i)):
            if diff == 0:
                break
            give = min(shares[i], -diff)
            shares[i] -= give
            diff += give
    return shares


def refund_in_proportion(paid: Sequence[int], refunded_before: Sequence[int], *, net: int, returned_net: int,
                         fully: bool) -> list[int]:
    """What a return gives back to each part that paid a sale (wallet cash and bonus, each gift card). Together
    the parts give back the paid share of everything returned so far (``returned_net`` of the sale's ``net``,
    this return included), rounded half up once for all of them, less what earlier returns gave back; that step
    is spread over what each part has still to get back, in proportion (:func:`allocate`).

    So a return never gives back more than the goods it takes were worth (the parts are rounded together, not
    each on its own), no part's refunds ever shrink (each step is spread over what is outstanding, never over what
    was paid again), and all returns together give back exactly ``paid``."""
    total_paid = sum(paid)
    if total_paid == 0 or net == 0:
        return [0 for _ in paid]
    outstanding = [max(p - b, 0) for p, b in zip(paid, refunded_before, strict=True)]
    total = total_paid if fully else min(round_half_up(Decimal(total_paid) * returned_net / net), total_paid)
    step = min(max(total - sum(refunded_before), 0), sum(outstanding))
    return allocate(step, outstanding)
