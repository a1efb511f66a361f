"""Event and webhook decisions as pure functions: the event types, the signature, the retry schedule, when an
endpoint is disabled. No I/O, no clock: "now" is a parameter."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import datetime, timedelta

# Every event type the service emits. A webhook subscribes to some of them (none named: all of them).
EVENT_TYPES = (
    "member.enrolled",
    "member.erased",
    "transaction.committed",
    "transaction.voided",
    "transaction.returned",
    "tier.changed",
    "reward.issued",
    "referral.rewarded",
    "referral.reversed",
    "voucher.issued",
    "points.adjusted",
    "points.expired",
    "wallet.topped_up",
    "wallet.cashed_out",
)

SIGNATURE_HEADER = "X-Loyalty-Signature"
SIGNATURE_TOLERANCE = timedelta(minutes=5)  # what the README tells receivers to accept

FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(hours=6)
RETRY_WINDOW = timedelta(days=3)  # a delivery is retried for this long after it was first due
DISABLE_AFTER = timedelta(days=1)  # an endpoint failing without a single success this long is disabled


def requested_types(values: list[str] | None) -> list[str] | None:
    """The event types a feed's ``types`` parameter names, each value a type or several separated by commas:
    None when the parameter is absent (every type); an empty list when it is present but names none."""
    if values is None:
        return None
    return sorted({t.strip() for value in values for t in value.split(",") if t.strip()})


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``X-Loyalty-Signature``: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """What a receiver does (the README shows the same lines): recompute and compare in constant time, and
    refuse a timestamp older than ``tolerance`` seconds (a replayed request)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return abs(now - timestamp) <= tolerance and hmac.compare_digest(expected, parts.get("v1", ""))


def claim_size(wanted: int, *, at_once: int, send_seconds: float, lease: timedelta) -> int:
    """How many of ``wanted`` deliveries one pass may claim. Its sends go ``at_once`` at a time, each cut off
    after ``send_seconds``, so a claim of n is sent within ceil(n / at_once) rounds; those rounds must end within
    half the lease (the other half is margin: claiming, a busy machine), so that no second worker takes a
    delivery while it is still being sent. A lease too short for even one round is a configuration error."""
    rounds = int(lease.total_seconds() / 2 // send_seconds)
    if rounds < 1:
        raise ValueError(f"a lease of {lease} cannot cover a send of {send_seconds:g} s")
    return max(0, min(wanted, rounds * at_once))


def refusal(status: int, body: bytes) -> str:
    """A delivery's ``last_error`` for a non-2xx answer: the status, then the start of the receiver's body (its
    reason, when it gives one) on one line, at most 500 characters in all."""
    text = " ".join(body.decode("utf-8", "replace").split())
    return (f"HTTP {status}: {text}" if text else f"HTTP {status}")[:500]


def retry_delay(attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: 30 s doubling up to 6 h, with "equal jitter" (between
    half and all of it), so that endpoints coming back from an outage are not hit by every retry at once."""
    rng = rng or random.Random()
    full = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY)
    return full / 2 + full / 2 * rng.random()


def next_attempt(attempts: int, window_start: datetime, now: datetime,
                 rng: random.Random | None = None) -> datetime | None:
    """When to try again after ``attempts`` failures, or None to give up: no retry starts later than
    :data:`RETRY_WINDOW` after the delivery was first due."""
    at = now + retry_delay(attempts, rng)
    return at if at <= window_start + RETRY_WINDOW else None


def in_flight(claim: str | None, next_attempt_at: datetime, now: datetime) -> bool:
    """A delivery a worker has claimed and whose lease (its ``next_attempt_at`` while claimed) has not run out
    is being sent now, or its outcome is about to be recorded. Past the lease, the worker is gone or done
    sending (no send outlives its lease), and its outcome will not be recorded over a new claim."""
    return claim is not None and next_attempt_at > now


def should_disable(failing_since: datetime | None, now: datetime) -> bool:
    """An endpoint that has failed every attempt for :data:`DISABLE_AFTER` is disabled."""
    return failing_since is not None and now - failing_since >= DISABLE_AFTER


def wants(types: list[str], event_type: str) -> bool:
    return not types or event_type in types
