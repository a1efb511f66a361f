"""The program's configuration decisions, directly."""

from __future__ import annotations

from service.program import rules


def test_the_currency_changes_only_while_no_stored_value_is_held():
    assert rules.currency_change_problem("USD", "USD", 5000) is None  # no change
    assert rules.currency_change_problem("USD", "EUR", 0) is None
    problem = rules.currency_change_problem("USD", "EUR", 1250)
    assert problem is not None and "12.50 USD" in problem and "from USD to EUR" in problem
