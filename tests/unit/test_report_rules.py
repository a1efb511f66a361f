from datetime import UTC, datetime, timedelta

import pytest

from service.reports import rules
from service.reports.errors import InvalidPeriod

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_the_period_ends_now_by_default_and_has_no_start():
    assert rules.period(None, None, NOW) == (None, NOW)
    start = NOW - timedelta(days=30)
    assert rules.period(start, None, NOW) == (start, NOW)


@pytest.mark.parametrize("start", [NOW, NOW + timedelta(seconds=1)])
def test_a_period_that_ends_before_it_starts_is_refused(start):
    with pytest.raises(InvalidPeriod):
        rules.period(start, NOW, NOW)


def test_rates_round_to_four_decimals_and_are_none_without_a_whole():
    assert rules.rate(1, 3) == 0.3333
    assert rules.rate(2, 3) == 0.6667
    assert rules.rate(5, 5) == 1.0
    assert rules.rate(0, 0) is None
    assert rules.rate(3, -2) is None


def test_points_figures_take_the_sign_of_the_members_side():
    # The program's accounts receive the opposite of the members': 1,000 earned (-1,000 into points_issued),
    # 250 burned (+250 into points_redeemed), 100 expired, an adjustment giving 40 and one taking 15.
    flow = rules.points_flow({"program:points_issued": -1000, "program:points_redeemed": 250,
                              "program:points_expired": 100, "program:points_adjusted": -25})
    assert flow == rules.PointsFlow(issued=1000, redeemed=250, expired=100, adjusted=25)
    assert (flow.redemption_rate, flow.expiry_rate) == (0.25, 0.1)


def test_points_figures_of_an_empty_period_are_zero_and_their_rates_none():
    flow = rules.points_flow({})
    assert flow == rules.PointsFlow(0, 0, 0, 0)
    assert flow.redemption_rate is None and flow.expiry_rate is None


def test_burning_more_than_was_issued_in_the_period_gives_a_rate_above_one():
    assert rules.points_flow({"program:points_issued": -100, "program:points_redeemed": 300}).redemption_rate == 3.0


@pytest.mark.parametrize(("status", "past_end", "standing"), [
    ("redeemed", False, "redeemed"), ("redeemed", True, "redeemed"),
    ("active", False, "open"), ("active", True, "expired"),
    ("available", False, "open"), ("available", True, "expired"),
    ("expired", True, "expired"),
    ("void", False, "withdrawn"), ("void", True, "withdrawn"),
    ("revoked", False, "withdrawn"),
])
def test_standing_counts_an_open_voucher_or_reward_past_its_end_as_expired(status, past_end, standing):
    assert rules.standing(status, past_end) == standing


def test_cohorts_tally_each_owner_and_leave_withdrawn_out_of_the_rate():
    rows = [("cmp_a", "A", "redeemed", False, 3), ("cmp_a", "A", "active", False, 2), ("cmp_a", "A", "active", True, 1),
            ("cmp_a", "A", "expired", True, 1), ("cmp_a", "A", "void", False, 2), ("cmp_b", "B", "active", False, 4)]
    got = rules.cohorts(rows)
    assert got["cmp_a"] == rules.Cohort(issued=9, redeemed=3, expired=2, open=2, withdrawn=2)
    assert got["cmp_a"].redemption_rate == round(3 / 7, 4)
    assert got["cmp_b"] == rules.Cohort(issued=4, open=4)
    assert got["cmp_b"].redemption_rate == 0.0
    assert rules.total(got.values()) == rules.Cohort(issued=13, redeemed=3, expired=2, open=6, withdrawn=2)


def test_a_cohort_wholly_withdrawn_has_no_rate():
    assert rules.cohorts([("pcp_a", "Coffee", "revoked", False, 2)])["pcp_a"].redemption_rate is None
    assert rules.total([]) == rules.Cohort()


def test_gift_card_figures_take_the_cards_side():
    # 10,000 put on cards (-10,000 into gift_cards_issued), 4,000 spent and 500 of it put back by a void.
    flow = rules.gift_card_flow({"program:gift_cards_issued": -10_000, "program:gift_cards_spent": 3_500,
                                 "program:points_issued": -7})
    assert flow == rules.GiftCardFlow(issued=10_000, spent=3_500)
    assert flow.redemption_rate == 0.35
    assert rules.gift_card_flow({}).redemption_rate is None
