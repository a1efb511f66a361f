"""Wallet rules: the bonus rule choice, and a property over random sequences of top-ups, payments, returns and
voids: no part ever goes negative, every payment and refund adds up exactly, and all returns of a sale together
give back exactly what it took from each part."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.checkout import rules as checkout_rules
from service.wallet import rules
from service.wallet.rules import BonusRule, Split

BONUSES = [BonusRule(1000, 50), BonusRule(5000, 500), BonusRule(300, 7)]


def test_the_largest_rule_reached_wins():
    assert [rules.top_up_bonus(a, BONUSES) for a in (299, 300, 999, 1000, 4999, 5000, 10**9)] == [
        0, 7, 7, 50, 50, 500, 500]
    assert rules.top_up_bonus(10**6, []) == 0


def test_one_cent_across_three_to_one():
    assert rules.split_payment(1, cash=300, bonus=100) == Split(1, 0)
    assert rules.split_payment(3, cash=299, bonus=100) == Split(2, 1)
    assert rules.split_payment(5, cash=0, bonus=7) == Split(0, 5)


def _refund(paid: Split, back: Split, **figures) -> Split:
    """The checkout's refund of stored value over the wallet's two parts."""
    got = checkout_rules.stored_value_refund({"cash": paid.cash, "bonus": paid.bonus},
                                             {"cash": back.cash, "bonus": back.bonus}, **figures)
    return Split(got.get("cash", 0), got.get("bonus", 0))


OPS = st.lists(st.tuples(st.sampled_from(["top_up", "pay", "return", "void"]), st.integers(0, 10**6),
                         st.integers(1, 4)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_random_sequences_keep_the_wallet_whole(ops):
    cash = bonus = 0
    sales: list[dict] = []  # paid split, refunded so far, units sold and returned, net per unit
    for op, n, units in ops:
        if op == "top_up":
            amount = n % 10_000 + 1
            cash += amount
            bonus += rules.top_up_bonus(amount, BONUSES)
        elif op == "pay":
            net = (n % 500 + 1) * units
            amount = min(n % (net + 1), cash + bonus)
            split = rules.split_payment(amount, cash=cash, bonus=bonus)
            assert split.total == amount and 0 <= split.cash <= cash and 0 <= split.bonus <= bonus
            cash, bonus = cash - split.cash, bonus - split.bonus
            sales.append({"paid": split, "back": Split(0, 0), "units": units, "returned": 0, "unit": net // units,
                          "open": True})
        elif sales:
            sale = sales[n % len(sales)]
            if not sale["open"]:
                continue
            if op == "void":
                give = Split(sale["paid"].cash - sale["back"].cash, sale["paid"].bonus - sale["back"].bonus)
                sale["open"] = False
            else:
                if sale["returned"] == sale["units"]:
                    continue
                sale["returned"] += 1
                fully = sale["returned"] == sale["units"]
                give = _refund(sale["paid"], sale["back"], net=sale["unit"] * sale["units"],
                               returned_net=sale["unit"] * sale["returned"], fully=fully)
                sale["open"] = not fully
            assert give.cash >= 0 and give.bonus >= 0
            sale["back"] = Split(sale["back"].cash + give.cash, sale["back"].bonus + give.bonus)
            assert sale["back"].cash <= sale["paid"].cash and sale["back"].bonus <= sale["paid"].bonus
            if not sale["open"]:
                assert sale["back"] == sale["paid"]
            cash, bonus = cash + give.cash, bonus + give.bonus
        assert cash >= 0 and bonus >= 0
