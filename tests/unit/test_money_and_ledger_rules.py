from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.ledger import rules
from service.money import allocate, round_half_up

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = datetime(2026, 6, 1, tzinfo=UTC)


def test_round_half_up():
    assert [round_half_up(Decimal(x)) for x in ("0.5", "1.5", "2.5", "-2.5", "2.49")] == [1, 2, 3, -3, 2]


def test_allocate_rounds_half_up_and_sums_exactly():
    assert allocate(100, [1000, 333]) == [75, 25]
    assert allocate(100, [100, 100, 101]) == [33, 33, 34]
    assert allocate(3, [1, 1, 1]) == [1, 1, 1]
    assert allocate(0, [5, 5]) == [0, 0]
    assert allocate(10, [0, 10]) == [0, 10]
    with pytest.raises(ValueError):
        allocate(11, [5, 5])


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=30), st.data())
def test_allocate_properties(weights, data):
    amount = data.draw(st.integers(0, sum(weights)))
    shares = allocate(amount, weights)
    assert sum(shares) == amount
    assert all(0 <= s <= w for s, w in zip(shares, weights, strict=True))


def test_movements_are_balanced_by_construction():
    m = rules.Movement("points", "points", -40, "program:points_redeemed", "burn")
    legs = rules.legs(m)
    assert rules.unbalanced_assets((leg.asset, leg.amount) for leg in legs) == {}
    assert rules.unbalanced_assets([("points", 5), ("points", -4), ("USD", 0)]) == {"points": 1}


def test_draws_take_the_soonest_expiring_lots_first():
    lots = [rules.Lot(1, T2, 10, "a"), rules.Lot(2, T1, 10, "b"), rules.Lot(3, None, 10, "c")]
    assert rules.plan_draws(lots, 15) == [(2, 10), (1, 5)]
    assert rules.plan_draws(lots, 35) == [(2, 10), (1, 10), (3, 10)]  # short by 5: that is debt
    assert rules.plan_draws(lots, 12, prefer_transaction="c") == [(3, 10), (2, 2)]


def test_credits_repay_a_debt_before_filling_lots():
    assert rules.lot_share_of_credit(-30, 20) == 0
    assert rules.lot_share_of_credit(-30, 50) == 20
    assert rules.lot_share_of_credit(10, 5) == 5
    assert rules.plan_restore([(1, 10), (2, 5)], 12) == ([(1, 10), (2, 2)], 0)
    assert rules.plan_restore([(1, 3)], 5) == ([(1, 3)], 2)
