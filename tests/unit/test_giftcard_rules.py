"""Gift card rules and the failed-attempt limiter: how a payment spreads over cards, what returns give back to each
card (all returns together exactly what it paid), PINs, and the sliding window behind the lockout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.giftcards import rules
from service.giftcards.errors import GiftCardExceedsPayable
from service.giftcards.rules import Tender
from service.ledger.errors import InsufficientFunds
from service.ratelimit import Limit, decide

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_cards_pay_in_the_order_handed_over_and_never_more_than_payable():
    cards = [Tender("a", "AAAA", 1000, 400), Tender("b", "BBBB", 1000), Tender("c", "CCCC", 1000)]
    assert rules.plan_payment(cards, 1800) == [("a", 400), ("b", 1000), ("c", 400)]
    assert rules.plan_payment(cards[1:], 300) == [("b", 300), ("c", 0)]
    assert rules.plan_payment([Tender("a", "AAAA", 0)], 500) == [("a", 0)]
    assert rules.plan_payment([], 500) == []


def test_an_amount_asked_of_a_card_must_be_owed_and_held():
    with pytest.raises(GiftCardExceedsPayable) as exceeds:
        rules.plan_payment([Tender("a", "AAAA", 1000, 600), Tender("b", "BBBB", 1000, 500)], 1000)
    assert exceeds.value.extra == {"payable": 400} and "BBBB" in exceeds.value.detail
    with pytest.raises(InsufficientFunds) as short:
        rules.plan_payment([Tender("a", "XY1234", 299, 300)], 1000)
    assert short.value.extra == {"balance": 299} and "ending in 1234" in short.value.detail


def test_pins_are_digits_tied_to_the_key_and_the_card():
    pin = rules.card_pin("k" * 32, "gft_1")
    assert len(pin) == rules.PIN_DIGITS and pin.isdigit()
    assert pin == rules.card_pin("k" * 32, "gft_1")
    assert len({rules.card_pin("k" * 32, f"gft_{i}") for i in range(50)}) > 45
    assert rules.card_pin("j" * 32, "gft_1") != pin  # another key, other PINs
    stored = rules.hash_pin("k" * 32, "gft_1", pin)
    assert rules.pin_matches("k" * 32, "gft_1", pin, stored)
    assert not rules.pin_matches("k" * 32, "gft_2", pin, stored)  # the hash is bound to its card
    assert not rules.pin_matches("j" * 32, "gft_1", pin, stored)  # and to the key
    assert pin not in stored


LIMIT = Limit("test", max_failures=5, window=timedelta(hours=1))


def test_five_failures_in_the_window_refuse_until_the_oldest_leaves_it():
    failures = [T0 + timedelta(minutes=m) for m in (0, 10, 20, 30)]
    assert decide(LIMIT, failures, T0 + timedelta(minutes=40)).remaining == 1
    failures.append(T0 + timedelta(minutes=40))
    refused = decide(LIMIT, failures, T0 + timedelta(minutes=40))
    assert not refused.allowed and refused.retry_after == timedelta(minutes=20) and refused.retry_after_seconds == 1200
    assert not decide(LIMIT, failures, T0 + timedelta(minutes=59, seconds=59)).allowed
    later = decide(LIMIT, failures, T0 + timedelta(hours=1))  # the 10:00 failure no longer counts
    assert later.allowed and later.remaining == 1


def test_only_the_most_recent_failures_decide_when_a_subject_is_free_again():
    burst = [T0 + timedelta(seconds=s) for s in range(8)]  # more than the limit (attempts that were in flight)
    refused = decide(LIMIT, burst, T0 + timedelta(minutes=1))
    assert refused.retry_after == timedelta(hours=1, seconds=3) - timedelta(minutes=1)  # the 5th most recent: 0:03
    assert decide(LIMIT, burst, T0 + timedelta(hours=1, seconds=3)).allowed
    assert decide(LIMIT, [T0 + timedelta(minutes=5)], T0).remaining == 5  # failures "after now" do not count
    assert decide(LIMIT, [], T0).allowed


def test_limits_must_be_sensible():
    with pytest.raises(ValueError):
        Limit("x", max_failures=0, window=timedelta(minutes=1))
    with pytest.raises(ValueError):
        Limit("x", max_failures=3, window=timedelta(days=2))  # longer than failures are kept
