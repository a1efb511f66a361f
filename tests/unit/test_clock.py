"""The clock's calendar helpers: the day a time falls on for a reader, and the last day an end still covers, on
a store's calendar across its daylight-saving changes and far from UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from service import clock


def test_the_day_a_time_falls_on_depends_on_the_readers_zone():
    at = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert clock.day_of(at) == date(2026, 12, 31)  # the app's reader: UTC
    assert clock.day_of(at, "Asia/Shanghai") == date(2027, 1, 1)
    assert clock.day_of(at, "Pacific/Pago_Pago") == date(2026, 12, 31)
    assert clock.day_of(datetime(2027, 1, 1, 5, tzinfo=timezone(timedelta(hours=8)))) == date(2026, 12, 31)


def test_an_end_at_local_midnight_on_a_daylight_saving_day_leaves_the_day_before_as_the_last():
    # Berlin springs forward on 28 March 2027 (02:00 CET -> 03:00 CEST) and falls back on 25 October 2026
    spring = datetime(2027, 3, 28, 0, 0, tzinfo=UTC) - timedelta(hours=1)  # midnight CET, 23:00 UTC the day before
    assert clock.last_day(spring, "Europe/Berlin") == date(2027, 3, 27)
    assert clock.last_day(spring + timedelta(hours=23), "Europe/Berlin") == date(2027, 3, 28)  # a 23-hour day
    assert clock.last_day(spring + timedelta(hours=24), "Europe/Berlin") == date(2027, 3, 29)  # 01:00 CEST
    autumn = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # midnight CEST on 25 October
    assert clock.last_day(autumn, "Europe/Berlin") == date(2026, 10, 24)
    assert clock.last_day(datetime(2026, 10, 25, 23, tzinfo=UTC), "Europe/Berlin") == date(2026, 10, 25)  # 25 hours
    # New York's repeated hour (01:00-02:00 on 1 November 2026, EDT then EST) stays on 1 November
    for at in (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)):
        assert clock.day_of(at, "America/New_York") == date(2026, 11, 1)
    # an end one microsecond after midnight covers that day
    assert clock.last_day(datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == date(2027, 1, 1)
    assert clock.last_day(datetime(2027, 1, 1, tzinfo=UTC)) == date(2026, 12, 31)


def test_times_are_held_in_utc_and_a_naive_one_is_taken_as_utc():
    assert clock.utc(datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))) == \
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert clock.utc(datetime(2026, 3, 29, 1, 30)) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    fixed = clock.FixedClock(datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=-5))))
    assert fixed.now() == datetime(2026, 1, 31, 17, tzinfo=UTC) and fixed.now().utcoffset() == timedelta(0)
    fixed.advance(timedelta(days=1))
    assert fixed.now() == datetime(2026, 2, 1, 17, tzinfo=UTC)


def test_an_end_is_told_as_its_last_day_at_midnight_and_with_its_time_otherwise():
    """A 7-day voucher issued at 15:00 ends at 15:00 on its seventh day: "valid until 2027-03-31" had the till
    refuse it at 18:00 on the day it had called its last."""
    assert clock.told_end(datetime(2027, 4, 1, tzinfo=UTC)) == "2027-03-31"
    assert clock.told_end(datetime(2027, 3, 31, 15, tzinfo=UTC)) == "2027-03-31 15:00"
    assert clock.told_end(datetime(2027, 3, 31, 22, tzinfo=UTC), "Europe/Berlin") == "2027-03-31"  # midnight CEST
    assert clock.told_end(datetime(2027, 3, 31, 22, tzinfo=UTC)) == "2027-03-31 22:00"
    assert clock.told_end(datetime(2027, 3, 31, 15, tzinfo=UTC), "Asia/Shanghai") == "2027-03-31 23:00"
