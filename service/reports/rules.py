"""Redemption figures (DESIGN §1, insight), pure: how much of what the program gave out was used.

Two kinds of figure, because the things given out differ:

- **Points are a flow.** Over a period, the points the program issued (earned, referral and birthday bonuses;
  less what returns and voids took back), redeemed (burned at the till; less what voids and returns put back),
  expired and adjusted, each the net movement of the program's own account in the period, by the entries'
  posting time (a back-dated sale, or an imported history, counts when it was committed). ``redemption_rate``
  is redeemed over issued in the same period, ``expiry_rate`` expired over issued: the burn rate and the
  breakage finance asks for. Points redeemed in a period may have been issued before it, so a rate can pass 1.
- **Gift cards are a flow too**, of money: the value issued on cards in the period and the value spent from
  cards at the till (less what voids and returns put back), and spent over issued.
- **Vouchers and punch card rewards are counted things.** The ones issued in the period (a cohort, by
  ``issued_at``) are counted by where they stand now: redeemed, expired (an active voucher or available
  reward past its end counts as expired, whether or not the sweep has written so), still open, or withdrawn
  (a voucher voided, a reward revoked when the sale that earned it was returned or voided). Withdrawn ones
  were never the member's to use, so ``redemption_rate`` is redeemed over issued less withdrawn.

Rates are ``None`` when there is nothing to divide by, and rounded to four decimals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from service.reports.errors import InvalidPeriod

RATE_DECIMALS = 4


def period(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime | None, datetime]:
    """The report's ``[start, end)``: ``end`` defaults to now; no ``start`` means since the program began. 422
    ``invalid_period`` when it starts at or after its end."""
    end = now if end is None else end
    if start is not None and start >= end:
        raise InvalidPeriod(f"The period starts at {start.isoformat()}, not before its end {end.isoformat()}.")
    return start, end


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, RATE_DECIMALS) if whole > 0 else None


@dataclass(frozen=True, slots=True)
class PointsFlow:
    issued: int
    redeemed: int
    expired: int
    adjusted: int

    @property
    def redemption_rate(self) -> float | None:
        return rate(self.redeemed, self.issued)

    @property
    def expiry_rate(self) -> float | None:
        return rate(self.expired, self.issued)


# The program's points accounts, and the sign that turns the net of each account's entries into the figure:
# an account on the program's side receives the opposite of what the members' accounts receive.
POINTS_ACCOUNTS = {"program:points_issued": ("issued", -1), "program:points_redeemed": ("redeemed", 1),
                   "program:points_expired": ("expired", 1), "program:points_adjusted": ("adjusted", -1)}


def points_flow(net_by_account: Mapping[str, int]) -> PointsFlow:
    """The figures from the net amount each of the program's points accounts received in the period."""
    return PointsFlow(**_figures(POINTS_ACCOUNTS, net_by_account))


@dataclass(frozen=True, slots=True)
class GiftCardFlow:
    issued: int
    spent: int

    @property
    def redemption_rate(self) -> float | None:
        return rate(self.spent, self.issued)


GIFT_CARD_ACCOUNTS = {"program:gift_cards_issued": ("issued", -1), "program:gift_cards_spent": ("spent", 1)}


def gift_card_flow(net_by_account: Mapping[str, int]) -> GiftCardFlow:
    """Gift card value issued and spent at the till (less what voids and returns put back on the cards) in the
    period, from the net amount each of the program's gift card accounts received."""
    return GiftCardFlow(**_figures(GIFT_CARD_ACCOUNTS, net_by_account))


def _figures(accounts: Mapping[str, tuple[str, int]], net_by_account: Mapping[str, int]) -> dict[str, int]:
    return {name: sign * net_by_account.get(account, 0) for account, (name, sign) in accounts.items()}


@dataclass(frozen=True, slots=True)
class Cohort:
    """Things issued in the period, by where each stands now."""

    issued: int = 0
    redeemed: int = 0
    expired: int = 0
    open: int = 0
    withdrawn: int = 0

    @property
    def redemption_rate(self) -> float | None:
        return rate(self.redeemed, self.issued - self.withdrawn)


# Statuses of vouchers and punch card rewards, by what they mean for the cohort.
_STANDING = {"redeemed": "redeemed", "expired": "expired", "active": "open", "available": "open",
             "void": "withdrawn", "revoked": "withdrawn"}


def standing(status: str, past_end: bool) -> str:
    """Where one voucher or reward stands: an open one past its end has expired, sweep or no sweep."""
    kind = _STANDING[status]
    return "expired" if kind == "open" and past_end else kind


def cohorts(rows: Iterable[tuple[str, str, str, bool, int]]) -> dict[str, Cohort]:
    """``{owner: Cohort}`` from ``(owner, owner's name, status, past its end now, count)`` rows (an owner is a
    campaign or a punch card programme)."""
    counts: dict[str, dict[str, int]] = {}
    for owner, _, status, past_end, count in rows:
        tally = counts.setdefault(owner, {})
        kind = standing(status, bool(past_end))
        tally[kind] = tally.get(kind, 0) + int(count)
    return {owner: Cohort(issued=sum(tally.values()), **tally) for owner, tally in counts.items()}


def total(parts: Iterable[Cohort]) -> Cohort:
    parts = list(parts)
    return Cohort(issued=sum(c.issued for c in parts), redeemed=sum(c.redeemed for c in parts),
                  expired=sum(c.expired for c in parts), open=sum(c.open for c in parts),
                  withdrawn=sum(c.withdrawn for c in parts))
