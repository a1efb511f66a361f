from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from service.points import rules
from service.points.errors import InsufficientPoints, PointsOverLimit, SaleEarnsTooMuch

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def earn_rules(**kw) -> rules.EarnRules:
    base = {"base_rate": Decimal(1), "category_multipliers": {}, "sku_multipliers": {}, "bonus_events": ()}
    return rules.EarnRules(**{**base, **kw})


def line(net: int, sku: str = "S", category: str = "c", line_id: str = "1") -> rules.EarnLine:
    return rules.EarnLine(line_id, sku, category, net)


def test_base_rate_per_major_unit():
    assert rules.earn([line(1999)], earn_rules(), tier_multiplier=Decimal(1), occurred_at=NOW).points == 19
    assert rules.earn([line(1999)], earn_rules(exponent=0), tier_multiplier=Decimal(1), occurred_at=NOW).points == 1999


def test_sku_multiplier_wins_over_category():
    r = earn_rules(category_multipliers={"c": Decimal(2)}, sku_multipliers={"S": Decimal(3)})
    assert rules.item_multiplier(line(100), r) == 3
    assert rules.item_multiplier(line(100, sku="OTHER"), r) == 2
    assert rules.item_multiplier(line(100, sku="OTHER", category="d"), r) == 1


def test_points_are_floored_once_per_transaction():
    lines = [line(150, line_id=str(i)) for i in range(3)]
    earned = rules.earn(lines, earn_rules(), tier_multiplier=Decimal(1), occurred_at=NOW)
    assert earned.per_line["0"] == Decimal("1.5") and earned.points == 4


def test_tier_multiplier_and_exact_decimals():
    earned = rules.earn([line(1000)], earn_rules(base_rate=Decimal("0.1")), tier_multiplier=Decimal("1.1"),
                        occurred_at=NOW)
    assert earned.per_line["1"] == Decimal("1.1") and earned.points == 1  # no binary float drift (1.1000000001)


def test_bonus_events_by_window_category_and_segment():
    event = rules.BonusEvent("double", NOW - timedelta(hours=1), NOW + timedelta(hours=1), Decimal(2),
                             categories=frozenset({"c"}))
    triple = rules.BonusEvent("vip", NOW - timedelta(hours=1), NOW + timedelta(hours=1), Decimal(3),
                              segments=frozenset({"true_friend"}))
    r = earn_rules(bonus_events=(event, triple))
    none: frozenset[str] = frozenset()
    assert rules.bonus_multiplier(line(100), r, NOW, none) == 2
    assert rules.bonus_multiplier(line(100), r, NOW, frozenset({"gold", "true_friend"})) == 3  # the largest
    assert rules.bonus_multiplier(line(100), r, NOW, frozenset({"gold", "stranger"})) == 2
    assert rules.bonus_multiplier(line(100, category="d"), r, NOW, none) == 1
    assert rules.bonus_multiplier(line(100), r, NOW + timedelta(hours=1), none) == 1  # ends_at is exclusive
    assert rules.bonus_multiplier(line(100), r, NOW - timedelta(hours=1), none) == 2  # starts_at inclusive


def test_each_bonus_event_is_credited_only_where_its_multiplier_counts():
    window = {"starts_at": NOW - timedelta(hours=1), "ends_at": NOW + timedelta(hours=1)}
    double = rules.BonusEvent("double", multiplier=Decimal(2), **window)
    triple = rules.BonusEvent("triple", multiplier=Decimal(3), **window)
    tea = rules.BonusEvent("tea", multiplier=Decimal(2), categories=frozenset({"tea"}), **window)
    over = rules.BonusEvent("over", NOW - timedelta(days=2), NOW - timedelta(days=1), Decimal(5))

    def shares(events, lines):
        found = rules.bonus_shares(lines, earn_rules(bonus_events=tuple(events)), tier_multiplier=Decimal("1.5"),
                                   occurred_at=NOW)
        return [(s.points, s.outdone) for s in found]

    # 10.00 at 1.5x: 15 points; the triple adds 30, the double outdone adds nothing (it added 15)
    assert shares([double, triple, over], [line(1000)]) == [(0, True), (30, False), (0, False)]
    # two equal events on the tea line: the first in the program's order is counted, once
    coffee, tea_line = line(400, category="coffee", line_id="c"), line(600, category="tea", line_id="t")
    assert shares([double, tea], [coffee, tea_line]) == [(15, False), (0, True)]
    assert shares([tea, double], [coffee, tea_line]) == [(9, False), (6, True)]  # outdone on the tea line only
    assert shares([tea], [coffee]) == [(0, False)]  # nothing in the basket for it
    # floored per event, as a sale's points are: 1.5 + 1.5 over two lines is 3, not 1 + 1
    assert shares([double], [line(100, line_id="a"), line(100, line_id="b")]) == [(3, False)]
    # What the sale earns with the events less what it would without, each floored once, as the sale's points
    # are: 0.50 at 1.5x earns 0 points without the double (0.75) and 1 with it (1.5), where the extra alone
    # (0.75) floored to nothing.
    assert shares([double], [line(50)]) == [(1, False)]
    # Shared by the exact extras, so that the shares add up to that: 0.50 of coffee at 3x and 0.50 of tea at 2x
    # earn 3 points (3.75) against 1 (1.5) without; the extras, 1.5 and 0.75, floored one by one made 1 and 0.
    coffee_week = rules.BonusEvent("coffee", multiplier=Decimal(3), categories=frozenset({"coffee"}), **window)
    halves = [line(50, category="coffee", line_id="c"), line(50, category="tea", line_id="t")]
    assert shares([coffee_week, tea], halves) == [(1, False), (1, False)]


def test_burn_value_and_its_limits():
    assert rules.burn_value(100, balance=100, net=1000, max_burn_percent=100, point_value=2) == 200
    assert rules.burn_value(0, balance=-5, net=1000, max_burn_percent=100, point_value=1) == 0
    with pytest.raises(InsufficientPoints):
        rules.burn_value(101, balance=100, net=10_000, max_burn_percent=100, point_value=1)
    with pytest.raises(InsufficientPoints, match="owes"):
        rules.burn_value(1, balance=-1, net=10_000, max_burn_percent=100, point_value=1)
    with pytest.raises(PointsOverLimit):
        rules.burn_value(51, balance=100, net=101, max_burn_percent=50, point_value=1)
    assert rules.max_burnable_points(101, max_burn_percent=50, point_value=1) == 50
    assert rules.max_burnable_points(999, max_burn_percent=100, point_value=10) == 99


def test_lot_expiry_adds_calendar_months():
    assert rules.add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert rules.add_months(datetime(2027, 11, 30, tzinfo=UTC), 3) == datetime(2028, 2, 29, tzinfo=UTC)
    assert rules.lot_expiry(NOW, 12) == datetime(2027, 6, 15, 12, 0, tzinfo=UTC)
    assert rules.lot_expiry(NOW, None) is None


def test_points_are_floored_from_the_exact_product():
    """999.9999999999998 x 1.0000000000000002 is 999.99999999999999999999999999996: 999 points. In Decimal's
    default 28 digits the product rounded to 1000 before the floor."""
    earn = rules.EarnRules(base_rate=Decimal("999.9999999999998"), category_multipliers={},
                           sku_multipliers={"A": Decimal("1.0000000000000002")}, bonus_events=())
    earned = rules.earn([rules.EarnLine("1", "A", "c", 100)], earn, tier_multiplier=Decimal(1),
                        occurred_at=datetime.now(UTC))
    assert earned.points == 999


def test_a_sale_earns_at_most_a_trillion_points():
    rules.check_sale_points(rules.MAX_POINTS_PER_SALE)
    with pytest.raises(SaleEarnsTooMuch) as too_many:
        rules.check_sale_points(rules.MAX_POINTS_PER_SALE + 1)
    assert too_many.value.extra["max_points"] == rules.MAX_POINTS_PER_SALE


def test_month_arithmetic_at_month_ends_and_leap_days():
    """Lots expire and tier windows start by calendar months: the day is clamped to the month's end, the time of
    day kept, and a 29 February comes back only in a leap year."""
    leap = datetime(2028, 2, 29, 18, 30, 5, 123456, tzinfo=UTC)
    assert rules.lot_expiry(leap, 12) == datetime(2029, 2, 28, 18, 30, 5, 123456, tzinfo=UTC)
    assert rules.lot_expiry(leap, 48) == datetime(2032, 2, 29, 18, 30, 5, 123456, tzinfo=UTC)
    assert rules.lot_expiry(leap, 0) == leap
    assert rules.add_months(datetime(2026, 3, 31, tzinfo=UTC), -1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert rules.add_months(datetime(2028, 3, 31, tzinfo=UTC), -1) == datetime(2028, 2, 29, tzinfo=UTC)
    assert rules.add_months(datetime(2026, 1, 15, tzinfo=UTC), -13) == datetime(2024, 12, 15, tzinfo=UTC)
    assert rules.add_months(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), 1) == datetime(2027, 1, 31, 23, 59, tzinfo=UTC)
    assert rules.add_months(datetime(2026, 8, 31, tzinfo=UTC), 30) == datetime(2029, 2, 28, tzinfo=UTC)
    # counted from the earning each time, never month by month (which would drift to the 28th for good)
    jan31 = datetime(2027, 1, 31, tzinfo=UTC)
    assert [rules.add_months(jan31, k).day for k in (1, 2, 3, 4)] == [28, 31, 30, 31]
