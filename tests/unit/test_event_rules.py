"""Webhook rules: the signature receivers check, the retry schedule, when an endpoint is disabled."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import pytest

from service.events import rules

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"id":"evt_1","type":"member.enrolled"}'
    header = rules.signature("s3cret", 1700000000, body)
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_verification_refuses_a_changed_body_another_secret_an_old_timestamp_and_garbage():
    body = b'{"id":"evt_1"}'
    header = rules.signature("s3cret", 1700000000, body)
    assert rules.verify("s3cret", header, body, now=1700000100)
    assert not rules.verify("s3cret", header, body + b" ", now=1700000100)
    assert not rules.verify("other", header, body, now=1700000100)
    assert not rules.verify("s3cret", header, body, now=1700000000 + 301)
    assert not rules.verify("s3cret", "nonsense", body, now=1700000000)
    assert not rules.verify("s3cret", "t=abc,v1=00", body, now=1700000000)


def test_retry_delays_double_from_30_seconds_up_to_6_hours_with_jitter():
    rng = random.Random(7)
    for attempts in range(1, 30):
        full = min(timedelta(seconds=30) * 2 ** (attempts - 1), timedelta(hours=6))
        delays = [rules.retry_delay(attempts, rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered, not one fixed value


def test_retries_stop_three_days_after_the_delivery_was_first_due():
    start = NOW
    assert rules.next_attempt(1, start, start) is not None
    late = start + timedelta(days=3) - timedelta(minutes=1)
    assert rules.next_attempt(20, start, late) is None  # the next try (hours away) would fall after the window
    assert rules.next_attempt(1, start, late) is not None  # a short wait still fits


def test_an_endpoint_is_disabled_after_a_day_of_failures():
    assert not rules.should_disable(None, NOW)
    assert not rules.should_disable(NOW - timedelta(hours=23, minutes=59), NOW)
    assert rules.should_disable(NOW - timedelta(days=1), NOW)


def test_an_endpoint_without_types_wants_every_event():
    assert rules.wants([], "tier.changed")
    assert rules.wants(["tier.changed"], "tier.changed") and not rules.wants(["tier.changed"], "reward.issued")


def test_requested_types_reads_repeated_and_comma_separated_values():
    assert rules.requested_types(None) is None
    assert rules.requested_types(["points.expired, member.enrolled", "member.enrolled"]) == [
        "member.enrolled", "points.expired"]
    assert rules.requested_types([""]) == [] and rules.requested_types([" , ", ","]) == []


def test_a_refusal_is_its_status_and_the_start_of_its_body_on_one_line():
    assert rules.refusal(503, b"") == "HTTP 503"
    assert rules.refusal(400, b'{"error":\n  "bad \xff signature"}') == 'HTTP 400: {"error": "bad \ufffd signature"}'
    assert rules.refusal(500, b"x" * 4096) == "HTTP 500: " + "x" * 490


def test_a_claim_is_no_larger_than_its_sends_can_finish_in_half_the_lease():
    lease = timedelta(minutes=2)
    # 20 at a time, 10 s each: 6 rounds in 60 s, 120 sends.
    assert rules.claim_size(50, at_once=20, send_seconds=10, lease=lease) == 50
    assert rules.claim_size(500, at_once=20, send_seconds=10, lease=lease) == 120
    assert rules.claim_size(500, at_once=20, send_seconds=59, lease=lease) == 20
    with pytest.raises(ValueError, match="cannot cover"):
        rules.claim_size(50, at_once=20, send_seconds=61, lease=lease)


def test_a_delivery_is_in_flight_while_claimed_and_its_lease_lasts():
    assert rules.in_flight("clm_1", NOW + timedelta(seconds=1), NOW)
    assert not rules.in_flight("clm_1", NOW, NOW)  # the lease has run out: the worker is gone or done
    assert not rules.in_flight(None, NOW + timedelta(hours=1), NOW)  # waiting for its retry, not claimed
