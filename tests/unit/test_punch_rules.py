"""Punch-card rules: free units, stamps, rewards due, returns."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from service.punchcards import rules

COFFEE = rules.Program("p1", "Coffee", frozenset({"BEANS"}), frozenset({"coffee"}), 10, max_value=500,
                       reward_valid_days=30)


def unit(line_id: str, sku: str, category: str, quantity: int, price: int) -> rules.Unit:
    return rules.Unit(line_id, sku, category, quantity, price)


def test_the_cheapest_eligible_unit_goes_free_up_to_the_cap_and_each_unit_only_once():
    lines = [unit("a", "LATTE", "coffee", 1, 450), unit("b", "MOCHA", "coffee", 1, 900), unit("c", "X", "tea", 1, 10)]
    claims = [rules.Claim("r1", COFFEE), rules.Claim("r2", COFFEE), rules.Claim("r3", COFFEE)]
    result = rules.free_units(lines, claims)
    assert result.discounts == {"a": 450, "b": 500}
    assert result.units == {"a": 1, "b": 1}
    assert [c.reward_id for c in rules.unusable_claims(claims, result)] == ["r3"]


def test_rewards_fit_the_basket_whatever_order_the_till_lists_them_in():
    """A reward for anything hot and a coffee-only one, on a coffee (4.00) and a tea (5.00): the coffee-only one
    takes the coffee, the other the tea, in either order. Taken in the till's order, the hot one took the cheaper
    coffee first and left the coffee-only reward nothing."""
    hot = rules.Program("hot", "Hot drinks", frozenset(), frozenset({"coffee", "tea"}), 5, reward_valid_days=30)
    lines = [unit("c", "LATTE", "coffee", 1, 400), unit("t", "CHAI", "tea", 1, 500)]
    for claims in ([rules.Claim("r-hot", hot), rules.Claim("r-coffee", COFFEE)],
                   [rules.Claim("r-coffee", COFFEE), rules.Claim("r-hot", hot)]):
        result = rules.free_units(lines, claims)
        assert rules.unusable_claims(claims, result) == []
        assert result.discounts == {"c": 400, "t": 500}
        assert [f.reward_id for f in result.freed] == [c.reward_id for c in claims]  # the till's order


def test_a_reward_keeps_the_terms_it_was_issued_under():
    terms = rules.terms_of(COFFEE)  # no reward items of its own: the qualifying ones
    assert terms == rules.Terms(frozenset({"BEANS"}), frozenset({"coffee"}), 500)
    bakery = replace(COFFEE, reward_categories=frozenset({"bakery"}), max_value=200)
    assert rules.terms_of(bakery) == rules.Terms(frozenset(), frozenset({"bakery"}), 200)
    honoured = rules.as_issued(bakery, terms)
    assert honoured.reward_eligible("LATTE", "coffee") and not honoured.reward_eligible("MUFFIN", "bakery")
    result = rules.free_units([unit("a", "LATTE", "coffee", 1, 450)], [rules.Claim("r1", honoured)])
    assert result.discounts == {"a": 450}


def test_stamps_for_paid_qualifying_units_only():
    lines = [unit("a", "LATTE", "coffee", 3, 450), unit("b", "BEANS", "food", 1, 900), unit("c", "X", "tea", 2, 10)]
    assert rules.stamps_earned(lines, {"a": 1}, [COFFEE]) == {"p1": {"a": 2, "b": 1}}
    assert rules.stamps_earned(lines, {"a": 3, "b": 1}, [COFFEE]) == {}


def test_a_sale_stamps_the_programmes_it_qualifies_for_that_existed_at_its_time():
    start = datetime(2026, 3, 1, 9, tzinfo=UTC)
    started = replace(COFFEE, created_at=start)
    tea = rules.Program("p2", "Tea", frozenset(), frozenset({"tea"}), 5, reward_valid_days=30, created_at=start)
    lines = [("LATTE", "coffee")]
    assert rules.stamping([started, tea], lines, start) == [started]
    assert rules.stamping([started, tea], lines, start - timedelta(seconds=1)) == []
    assert rules.stamping([COFFEE], lines, start - timedelta(days=999)) == [COFFEE]  # no start known: any sale
    assert rules.stamping([started, tea], [("BEANS", "food"), ("X", "tea")], start + timedelta(days=1)) == [started,
                                                                                                        tea]


def test_a_unit_priced_at_nothing_earns_no_stamp_and_takes_no_reward():
    refill = unit("r", "REFILL", "coffee", 10, 0)
    assert rules.stamps_earned([refill], {}, [COFFEE]) == {}
    claims = [rules.Claim("r1", COFFEE)]
    result = rules.free_units([refill], claims)
    assert result.discounts == {} and [c.reward_id for c in rules.unusable_claims(claims, result)] == ["r1"]
    result = rules.free_units([refill, unit("a", "LATTE", "coffee", 1, 450)], claims)
    assert result.discounts == {"a": 450}  # the refill is not the cheapest unit to make free: it costs nothing


def test_a_sale_issues_at_most_fifty_rewards_of_a_programme_and_the_stamps_beyond_stay():
    assert rules.rewards_due(0, 10**6, 1) == rules.MAX_REWARDS_PER_SALE == 50
    assert rules.rewards_due(0, 51 * 10, 10) == 50


def test_rewards_due_carry_over_and_deficit():
    assert rules.rewards_due(0, 12, 10) == 1
    assert rules.rewards_due(8, 12, 10) == 2
    assert rules.rewards_due(-3, 12, 10) == 0
    assert rules.rewards_due(9, 0, 10) == 0


def test_returns_take_back_paid_units_first_and_never_more_than_earned():
    assert rules.stamps_to_remove(paid=2, returned_before=0, returned_now=1) == 1
    assert rules.stamps_to_remove(paid=2, returned_before=1, returned_now=2) == 1
    assert rules.stamps_to_remove(paid=2, returned_before=2, returned_now=1) == 0


def test_revocation_only_below_zero_and_only_as_many_as_needed():
    assert rules.rewards_to_revoke(0, [10, 10]) == 0
    assert rules.rewards_to_revoke(-1, [10, 10]) == 1
    assert rules.rewards_to_revoke(-11, [10] * 5) == 2
    assert rules.rewards_to_revoke(-11, [10]) == 1
    assert rules.rewards_to_revoke(-1, []) == 0


def test_each_revoked_reward_gives_back_what_it_cost_not_what_the_programme_asks_now():
    """Rewards issued at 5 stamps, then at 10 (the programme was raised): a deficit of 10 is covered by the first
    two of 5, one of 10, or one of 10 alone when it comes first."""
    assert rules.rewards_to_revoke(-10, [5, 5, 10]) == 2
    assert rules.rewards_to_revoke(-10, [10, 5, 5]) == 1
    assert rules.rewards_to_revoke(-6, [5, 5]) == 2
    assert rules.rewards_to_revoke(-11, [5, 5]) == 2  # what is left below zero is a deficit


def test_a_card_at_or_past_its_stamps_waits_for_one_stamp():
    """A programme lowered below what a member holds (or a sale past its 50 rewards) leaves a full card: the next
    stamp issues the reward, so the nudge counts one missing stamp, and the card lists the rewards waiting."""
    assert rules.missing_stamps(3, 5) == 2
    assert rules.missing_stamps(-2, 5) == 7
    assert rules.missing_stamps(5, 5) == rules.missing_stamps(9, 5) == 1
    assert rules.rewards_waiting(4, 5) == 0 and rules.rewards_waiting(-3, 5) == 0
    assert rules.rewards_waiting(9, 5) == 1 and rules.rewards_waiting(10, 5) == 2
    assert rules.rewards_waiting(10**6, 1) == rules.MAX_REWARDS_PER_SALE
