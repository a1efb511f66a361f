"""Gift card decisions as pure functions: PINs and their hashes, the limits on wrong PINs, how a payment spreads
over the cards a customer hands over, and what a return gives back to each.

A gift card is a bearer instrument: whoever holds its code and PIN may spend it. Its balance is the card's
``gift_card`` account in the ledger, against ``program:gift_cards_issued`` (issue) and
``program:gift_cards_spent`` (paying at the till, and what voids and returns give back).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from service.giftcards.errors import GiftCardExceedsPayable
from service.ledger.errors import InsufficientFunds
from service.ratelimit import Limit

ISSUED = "program:gift_cards_issued"
SPENT = "program:gift_cards_spent"
PIN_DIGITS = 8  # 10^8 PINs: at 5 tries an hour per card, guessing one takes 2 million hours on average
PIN_SCHEME = "hmac-sha256"
MAX_ISSUE = 500  # cards per issue call

# A card refuses its PIN for the rest of the hour once 5 wrong ones were tried in the trailing hour.
PIN_PER_CARD = Limit("gift_card_pin", max_failures=5, window=timedelta(hours=1))
# Each API key may get gift card codes or PINs wrong 10 times in 10 minutes (enumeration across cards).
LOOKUP_PER_KEY = Limit("gift_card_lookup", max_failures=10, window=timedelta(minutes=10))


def card_pin(key: str, gift_card_id: str) -> str:
    """The card's PIN: ``PIN_DIGITS`` digits drawn from HMAC-SHA256 under the service's secret key over the card's
    id (uniform: 2^256 mod 10^8 is negligible). Nobody can tell it without the key, and the service can say it
    again without keeping it anywhere, which is how a replayed issue answer shows the PINs it first showed."""
    digest = hmac.new(key.encode(), f"pin:{gift_card_id}".encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest, 'big') % 10**PIN_DIGITS:0{PIN_DIGITS}d}"


def hash_pin(key: str, gift_card_id: str, pin: str) -> str:
    """``hmac-sha256$<hex>``: HMAC-SHA256 under the service's secret key (kept outside the database), over the
    card's id and its PIN. A PIN has only 10^8 values, so an unkeyed hash, however slow, could be reversed by
    whoever copies the table; with the key kept apart, trying PINs needs the running service, where the lockout
    limits them. The card id binds each hash to its card (equal PINs hash differently). The scheme prefix lets a
    later key or scheme sit beside this one."""
    digest = hmac.new(key.encode(), f"{gift_card_id}:{pin}".encode(), hashlib.sha256).hexdigest()
    return f"{PIN_SCHEME}${digest}"


def pin_matches(key: str, gift_card_id: str, pin: str, stored: str) -> bool:
    return hmac.compare_digest(hash_pin(key, gift_card_id, pin), stored)


def status(balance: int) -> str:
    """``active`` while the card holds money, ``spent`` once it is empty (a return can fill it again)."""
    return "active" if balance > 0 else "spent"


def label(code: str) -> str:
    """How a message names a card without repeating its whole code (a cashier reads it out)."""
    return f"ending in {code[-4:]}"


@dataclass(frozen=True, slots=True)
class Tender:
    """One card handed over at the till: its balance (read under its lock) and the amount asked of it (None: as
    much as it holds, up to what is still owed)."""

    gift_card_id: str
    code: str
    balance: int
    amount: int | None = None


def plan_payment(cards: Sequence[Tender], payable: int) -> list[tuple[str, int]]:
    """``[(gift card id, amount)]``, in the order the cards were handed over. A card without an amount pays what it
    holds, up to what is still owed (possibly 0); a card with an amount pays exactly that, or the request is
    refused: 422 ``gift_card_exceeds_payable`` when it is more than what is still owed, 409
    ``insufficient_funds`` when the card holds less."""
    left = payable
    plan = []
    for card in cards:
        if card.amount is None:
            take = min(card.balance, left)
        elif card.amount > left:
            raise GiftCardExceedsPayable(
                f"The gift card {label(card.code)} can pay at most what is still owed ({left}); {card.amount} was "
                "asked.", payable=left)
        elif card.amount > card.balance:
            raise InsufficientFunds(f"The gift card {label(card.code)} holds {card.balance}; {card.amount} is "
                                    "needed.", balance=card.balance)
        else:
            take = card.amount
        plan.append((card.gift_card_id, take))
        left -= take
    return plan
