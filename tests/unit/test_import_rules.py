from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from service.imports import rules
from service.imports.schemas import ImportMember, ImportPurchase


def _purchase(receipt: str, day: int, store: str = "s1") -> ImportPurchase:
    return ImportPurchase(store_id=store, receipt_id=receipt, occurred_at=datetime(2024, 1, day, 12, tzinfo=UTC),
                          lines=[{"line_id": "1", "sku": "A", "category": "c", "quantity": 1, "unit_price": 100}])


def test_purchases_go_in_oldest_first_and_ties_keep_the_files_order():
    file = [_purchase("c", 3), _purchase("a", 1), _purchase("b2", 2), _purchase("b1", 2)]
    assert [p.receipt_id for p in rules.in_order(file)] == ["a", "b2", "b1", "c"]


def test_only_receipts_the_member_lacks_are_pending():
    file = [_purchase("a", 1), _purchase("b", 2), _purchase("a", 3, store="s2")]
    assert [(p.store_id, p.receipt_id) for p in rules.pending(file, {("s1", "a")})] == [("s1", "b"), ("s2", "a")]
    assert rules.pending(file, set()) == file


def test_a_bad_line_is_described_by_where_its_problems_are():
    with pytest.raises(ValidationError) as error:
        ImportMember.model_validate_json('{"name": "X", "purchases": [{"store_id": "s1", "receipt_id": "r", '
                                         '"occurred_at": "2024-01-01T00:00:00Z", "lines": []}]}')
    assert rules.describe(error.value) == ("external_ref: Field required; "
                                           "purchases.0.lines: List should have at least 1 item after validation, "
                                           "not 0")
    with pytest.raises(ValidationError) as error:
        ImportMember.model_validate_json("{oops")
    assert rules.describe(error.value).startswith("line: Invalid JSON")


def test_the_tally_counts_members_and_purchases_and_names_failures():
    tally = rules.Tally()
    tally.add(rules.Outcome(enrolled=True, committed=3, skipped=0))
    tally.add(rules.Outcome(enrolled=False, committed=1, skipped=2))
    tally.failures.append(rules.Failure(7, "crm-7", "Store 'x' not found."))
    assert tally.summary(2.0) == [
        "import: 2 members (1 enrolled, 1 already there), 4 purchases committed, 2 already committed",
        "import: 2.0 s, 2 purchases/s",
        "import: 1 lines failed; nothing of them was written: fix them and run the same file again",
    ]
    assert str(tally.failures[0]) == "line 7 (crm-7): Store 'x' not found."
    assert str(rules.Failure(8, None, "bad")) == "line 8: bad"


def test_the_tallies_of_several_jobs_merge_with_failures_in_line_order():
    first, second = rules.Tally(enrolled=2, committed=5, failures=[rules.Failure(9, None, "x")]), rules.Tally(
        found=1, committed=1, skipped=3, failures=[rules.Failure(2, "a", "y"), rules.Failure(12, "b", "z")])
    merged = rules.Tally.merged([first, second])
    assert (merged.enrolled, merged.found, merged.committed, merged.skipped) == (2, 1, 6, 3)
    assert [f.line for f in merged.failures] == [2, 9, 12]
