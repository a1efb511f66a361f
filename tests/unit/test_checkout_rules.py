from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from service.checkout import rules
from service.checkout.errors import OccurredAtOutOfRange, ReturnExceedsPurchase, UnknownLine
from service.points.rules import EarnRules

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def ctx(points: int = 0, balance: int = 1000, discount: str = "0", max_burn: int = 100) -> rules.Context:
    program = rules.ProgramRules("USD", 1, max_burn, EarnRules(Decimal(1), {}, {}, ()), 12)
    member = rules.MemberState("mem_1", "member", Decimal(1), Decimal(discount), balance)
    return rules.Context(program, member, rules.Redemptions(points), NOW)


def basket(*prices: int) -> rules.Basket:
    return rules.Basket(tuple(rules.Line(str(i), "S", "c", 1, p) for i, p in enumerate(prices)))


def test_pipeline_applies_tier_discount_then_points_then_earns_on_the_rest():
    priced = rules.price(basket(1000, 500), ctx(points=300, discount="10"))
    assert [line.discount for line in priced.basket.lines] == [100 + 200, 50 + 100]
    assert priced.basket.net == 1500 - 150 - 300
    assert priced.points_earned == 10  # 10.50 -> 10
    assert [m.kind for m in priced.movements] == ["burn", "earn"]
    assert sum(m.amount for m in priced.movements) == -300 + 10
    assert priced.discounts_by_kind["points"] == {"0": 200, "1": 100}


def test_no_line_goes_below_zero():
    priced = rules.price(basket(1, 0, 999), ctx(points=1000))
    assert [line.net for line in priced.basket.lines] == [0, 0, 0]


def test_occurred_at_window():
    rules.check_occurred_at(NOW - timedelta(hours=72), NOW, is_admin=False)
    rules.check_occurred_at(NOW - timedelta(days=3000), NOW, is_admin=True)
    rules.check_occurred_at(NOW + timedelta(minutes=5), NOW, is_admin=False)
    with pytest.raises(OccurredAtOutOfRange):
        rules.check_occurred_at(NOW - timedelta(hours=72, seconds=1), NOW, is_admin=False)
    with pytest.raises(OccurredAtOutOfRange):
        rules.check_occurred_at(NOW + timedelta(minutes=5, seconds=1), NOW, is_admin=True)


SOLD = [rules.SoldLine("a", 3, 999, Decimal("9.99"), Decimal("33.3")),
        rules.SoldLine("b", 1, 1, Decimal("0.01"), Decimal("0.1"))]


def test_returns_add_up_to_the_transaction_exactly():
    before = rules.ReturnTotals()
    returned: dict[str, int] = {}
    plans = []
    for request in ({"a": 1}, {"a": 1}, {"a": 1, "b": 1}):
        plan = rules.plan_return(SOLD, returned, request, points_earned=10, points_burned=33, before=before)
        plans.append(plan)
        before = rules.ReturnTotals(before.points_clawed_back + plan.points_clawed_back,
                                    before.points_refunded + plan.points_refunded,
                                    before.qualifying_spend + plan.qualifying_spend)
        for k, v in request.items():
            returned[k] = returned.get(k, 0) + v
    assert [p.points_clawed_back for p in plans] == [3, 3, 4]
    assert [p.points_refunded for p in plans] == [11, 11, 11]
    assert [p.qualifying_spend for p in plans] == [333, 333, 334]
    assert [p.fully_returned for p in plans] == [False, False, True]


def test_returns_never_exceed_what_was_bought():
    with pytest.raises(ReturnExceedsPurchase):
        rules.plan_return(SOLD, {"a": 2}, {"a": 2}, points_earned=10, points_burned=0, before=rules.ReturnTotals())
    with pytest.raises(UnknownLine):
        rules.plan_return(SOLD, {}, {"z": 1}, points_earned=10, points_burned=0, before=rules.ReturnTotals())
