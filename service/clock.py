"""The one source of "now". Everything that needs the time asks a ``Clock``; tests and ``--as-of`` swap it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Clock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock(Clock):
    """A clock that stands still until moved; for tests and for commands run ``--as-of`` a given time."""

    def __init__(self, at: datetime) -> None:
        self._at = utc(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = utc(at)

    def advance(self, delta: timedelta) -> None:
        self._at += delta
