"""The one source of "now". Everything that needs the time asks a ``Clock``; tests and ``--as-of`` swap it."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def day_of(at: datetime, timezone: str | None = None) -> date:
    """The calendar day ``at`` falls on for the reader: in ``timezone`` (the store's, at a till), in UTC
    without one (the app's, whose reader's zone is not known)."""
    return (at.astimezone(ZoneInfo(timezone)) if timezone else utc(at)).date()


def last_day(end: datetime, timezone: str | None = None) -> date:
    """The last calendar day an end-exclusive time still covers (:func:`day_of`): what "valid until" says. An
    end at midnight on 1 April leaves 31 March as the last day."""
    return day_of(end - timedelta(microseconds=1), timezone)


def told_end(end: datetime, timezone: str | None = None) -> str:
    """An end-exclusive time as a cashier or the app tells it ("valid until ..."), on the reader's calendar
    (:func:`day_of`): its last day (``2027-03-31``) when it falls at midnight there, so that the whole day is
    covered; else the day and the time it ends (``2027-03-31 15:00``). A voucher issued at 15:00 for 7 days ends
    at 15:00 on its seventh day: told as "valid until 2027-03-31" (until 2026-12-08), it was refused at 18:00 on
    a day the till had called its last."""
    local = end.astimezone(ZoneInfo(timezone)) if timezone else utc(end)
    if local.time() == time(0):
        return last_day(end, timezone).isoformat()
    return f"{local:%Y-%m-%d %H:%M}"


def in_utc(value: datetime) -> datetime:
    """A request's time as UTC, for a validator: a time UTC cannot hold (1 January of year 1 at +01:00, the last
    hours of year 9999 behind UTC) is a ValueError, which the API answers with a 422, not an OverflowError."""
    try:
        return utc(value)
    except OverflowError as exc:
        raise ValueError("must be a time between the years 1 and 9999 in UTC") from exc


def written_as_text(value: object) -> object:
    """Before pydantic parses a date or time of a request (a body's field or a query parameter): only ISO 8601
    text that starts with its date, as the API documents (or a ``date``/``datetime`` from Python callers).
    Pydantic would take a number, or a string of digits, as seconds since 1970, and for a date a midnight's
    count (even 1e-33) as that day: a time no client meant."""
    if not isinstance(value, str | date):
        raise ValueError("must be ISO 8601 text (a string), not a number")
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("must be ISO 8601 text starting with its date (YYYY-MM-DD), not a count of seconds")
    return value


# A time a request gives (a body's field or a query parameter): ISO 8601 text with an offset, held as UTC.
RequestTime = Annotated[AwareDatetime, BeforeValidator(written_as_text), AfterValidator(in_utc)]


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
