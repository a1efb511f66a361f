from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.checkout import rules
from service.checkout.errors import OccurredAtOutOfRange, ReturnExceedsPurchase, UnknownLine
from service.money import allocate
from service.points.rules import EarnRules
from service.punchcards import rules as punch_rules
from service.vouchers import rules as voucher_rules

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


def _free_coffee(*caps: int | None, reward_cap: int | None = 250, discount: str = "0") -> rules.Context:
    """A coffee card's reward (capped at ``reward_cap``) and a free-item voucher per cap in ``caps``."""
    card = punch_rules.Program("pcp_1", "Coffee card", frozenset(), frozenset({"coffee"}), 3, max_value=reward_cap,
                               reward_valid_days=30)
    vouchers = tuple(voucher_rules.Voucher(f"vch_{i}", f"CODE{i}", voucher_rules.Campaign(
        f"cmp_{i}", "Free coffee", voucher_rules.FREE_ITEM, cap, stackable=True), "mem_1", "active")
        for i, cap in enumerate(caps))
    return replace(ctx(discount=discount), punch=rules.PunchState((card,), {}, (punch_rules.Claim("rwd_1", card),)),
                   vouchers=rules.VoucherState(vouchers, voucher_rules.MemberFacts("member"), NOW))


def test_a_free_item_voucher_frees_one_unit_not_what_a_capped_reward_left_to_pay():
    """A reward capped at 2.50 leaves 2.50 of its 5.00 unit to pay. A free-item voucher then frees the other unit,
    5.00, not the line's whole 7.50 (which would make the capped unit free as well)."""
    lines = (rules.Line("1", "LATTE", "coffee", 2, 500),)
    priced = rules.price(rules.Basket(lines), _free_coffee(None))
    assert [(a.kind, a.amount) for a in priced.applied] == [("punch_reward", 250), ("voucher", 500)]
    assert priced.basket.net == 250
    # A reward capped at nothing frees nothing of its unit: the voucher takes the other one, 5.00.
    priced = rules.price(rules.Basket(lines), _free_coffee(None, reward_cap=0))
    assert [(a.kind, a.amount) for a in priced.applied] == [("punch_reward", 0), ("voucher", 500)]
    assert priced.basket.net == 500
    # With a 10 % tier discount the paid unit costs 4.50 and the capped one 2.25 of the 6.75 left.
    priced = rules.price(rules.Basket(lines), _free_coffee(None, discount="10"))
    assert [(a.kind, a.amount) for a in priced.applied] == [("punch_reward", 250), ("tier_discount", 75),
                                                           ("voucher", 450)]
    assert priced.basket.net == 225
    # A free-item voucher capped at 1.50 leaves 3.50 of its unit; the next voucher frees a whole unit, 5.00.
    priced = rules.price(rules.Basket((rules.Line("1", "LATTE", "coffee", 3, 500),)), _free_coffee(150, None))
    assert [(a.kind, a.amount) for a in priced.applied] == [("punch_reward", 250), ("voucher", 150),
                                                           ("voucher", 500)]
    assert priced.basket.net == 1500 - 250 - 150 - 500
    # Without a cap anywhere, units cost the line's net over its paid units, as before.
    priced = rules.price(rules.Basket((rules.Line("1", "LATTE", "coffee", 3, 401),)),
                         _free_coffee(None, None, reward_cap=None))
    assert [(a.kind, a.amount) for a in priced.applied] == [("punch_reward", 401), ("voucher", 401),
                                                           ("voucher", 401)]


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


def test_a_return_sums_exact_shares_and_rounds_once():
    """Thirds add up to whole points and to the basket's spend; rounded or cut to 28 digits line by line, they
    did not (three thirds of a point floored to 0; half of each of ten lines netting 1 came to 10, not 5)."""
    burned = rules.burned_by_line({"a": 10, "b": 10, "c": 10, "d": 30}, 20)
    assert burned == {"a": Fraction(10, 3), "b": Fraction(10, 3), "c": Fraction(10, 3), "d": 10}
    assert rules.burned_by_line({"a": 0}, 0) == {"a": 0}
    sold = [rules.SoldLine(x, 3, 100, Decimal(1), burned[x]) for x in "abcd"]
    plan = rules.plan_return(sold, {}, {"a": 3, "b": 3, "c": 3}, points_earned=4, points_burned=20,
                             before=rules.ReturnTotals())
    assert (plan.points_refunded, plan.points_clawed_back, plan.qualifying_spend) == (10, 3, 300)
    plan = rules.plan_return(sold, {}, {"a": 1, "b": 1, "c": 1}, points_earned=4, points_burned=20,
                             before=rules.ReturnTotals())
    assert (plan.points_refunded, plan.points_clawed_back, plan.qualifying_spend) == (3, 1, 100)
    halves = [rules.SoldLine(str(i), 2, 1, Decimal(0), Decimal(0)) for i in range(10)]
    plan = rules.plan_return(halves, {}, {str(i): 1 for i in range(10)}, points_earned=0, points_burned=0,
                             before=rules.ReturnTotals())
    assert plan.qualifying_spend == 5


def test_returns_never_exceed_what_was_bought():
    with pytest.raises(ReturnExceedsPurchase):
        rules.plan_return(SOLD, {"a": 2}, {"a": 2}, points_earned=10, points_burned=0, before=rules.ReturnTotals())
    with pytest.raises(UnknownLine):
        rules.plan_return(SOLD, {}, {"z": 1}, points_earned=10, points_burned=0, before=rules.ReturnTotals())


def test_returned_burned_points_never_come_back_ahead_of_their_units():
    """2 units at 3.00, one point worth 1.00 burned: the first unit back carries half a point, which stays until
    the last unit (rounded up, the point came back with 1.00 more than the unit carried)."""
    sold = [rules.SoldLine("a", 2, 500, Decimal(0), Decimal(1))]
    first = rules.plan_return(sold, {}, {"a": 1}, points_earned=0, points_burned=1, before=rules.ReturnTotals())
    assert first.points_refunded == 0
    last = rules.plan_return(sold, {"a": 1}, {"a": 1}, points_earned=0, points_burned=1,
                             before=rules.ReturnTotals(qualifying_spend=first.qualifying_spend))
    assert last.points_refunded == 1


def test_stored_value_comes_back_in_the_proportion_it_paid():
    paid = {"a": 200, "b": 133}
    first = rules.stored_value_refund(paid, {}, net=400, returned_net=100, fully=False)
    assert first == {"a": 50, "b": 33}  # 83.25 -> 83: 49.85 + 33.15
    second = rules.stored_value_refund(paid, first, net=400, returned_net=200, fully=False)
    assert second == {"a": 50, "b": 34}  # 166.5 -> 167 in all: 84 more over 150 and 100 outstanding
    assert rules.stored_value_refund(paid, {"a": 100, "b": 67}, net=400, returned_net=400, fully=True) == {
        "a": 100, "b": 66}
    assert rules.stored_value_refund({}, {}, net=400, returned_net=100, fully=False) == {}


def test_the_parts_of_stored_value_are_rounded_together():
    """A unit of 1 of two, paid 1 from the wallet and 1 by card: half of each, rounded each on its own, gave back
    1 to both, the whole sale for half the goods."""
    first = rules.stored_value_refund({"wallet": 1, "card": 1}, {}, net=2, returned_net=1, fully=False)
    assert sum(first.values()) == 1
    assert rules.stored_value_refund({"wallet": 1, "card": 1}, first, net=2, returned_net=2, fully=True) == {
        part: 1 - first.get(part, 0) for part in ("wallet", "card") if part not in first}
    # three cards of 1, a unit at a time: the second unit's 2 in all no longer takes back the first card's 1
    back: dict[str, int] = {}
    for returned in (1, 2, 3):
        step = rules.stored_value_refund({"a": 1, "b": 1, "c": 1}, back, net=3, returned_net=returned,
                                         fully=returned == 3)
        assert sum(step.values()) == 1, (returned, step)
        back = {k: back.get(k, 0) + step.get(k, 0) for k in "abc"}
    assert back == {"a": 1, "b": 1, "c": 1}


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=6), st.lists(st.integers(1, 5), min_size=1, max_size=6),
       st.integers(1, 300))
def test_returns_give_stored_value_back_a_step_at_a_time(amounts, quantities, unit):
    """Every return gives back no more than its goods were worth, no part's refunds ever shrink or pass what it
    paid, and all returns together give back exactly what each part paid."""
    net = sum(quantities) * unit
    # stored value never pays more than the sale's net
    paid = {f"p{i}": amount for i, amount in enumerate(allocate(min(sum(amounts), net), amounts))}
    back: dict[str, int] = {}
    returned = 0
    for i, quantity in enumerate(quantities):
        returned += quantity * unit
        step = rules.stored_value_refund(paid, back, net=net, returned_net=returned, fully=i == len(quantities) - 1)
        assert all(amount > 0 for amount in step.values())
        assert sum(step.values()) <= quantity * unit
        for part, amount in step.items():
            back[part] = back.get(part, 0) + amount
        assert all(back.get(part, 0) <= paid[part] for part in paid)
    assert {part: back.get(part, 0) for part in paid} == paid
