"""The tier rules on their own (DESIGN §5): upgrades, and reviews at many dates including the window's edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.points.rules import add_months
from service.tiers import rules
from service.tiers.rules import State

LADDER = (0, 500, 1500)  # member, silver, gold
W = 12
T = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)  # a month-end attainment: reviews must not drift
US = timedelta(microseconds=1)


def gold(at=T):
    return State(2, at, rules.add_months(at, W))


def test_qualified_level_and_upgrade_by_one_and_several_levels():
    assert [rules.qualified_level(s, LADDER) for s in (0, 499, 500, 1499, 1500, 10**9)] == [0, 0, 1, 1, 2, 2]
    base = State(0, None, None)
    new, change = rules.upgrade(base, 600, LADDER, T, W)
    assert new == State(1, T, datetime(2026, 1, 31, 12, tzinfo=UTC))
    assert change == rules.Change(0, 1, T, "qualifying_spend")
    new, change = rules.upgrade(base, 1500, LADDER, T, W)
    assert new.level == 2 and change.from_level == 0 and change.to_level == 2
    assert rules.upgrade(gold(), 10**6, LADDER, T, W) == (gold(), None)
    assert rules.upgrade(State(1, T, None), 499, LADDER, T, W)[1] is None  # never a downgrade at a commit


def test_next_review_counts_from_the_attainment_without_month_end_drift():
    assert rules.next_review(T, T, W) == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert rules.next_review(T, datetime(2026, 1, 31, 12, tzinfo=UTC), W) == datetime(2027, 1, 31, 12, tzinfo=UTC)
    feb = datetime(2024, 2, 29, tzinfo=UTC)
    assert [rules.next_review(feb, rules.add_months(feb, k), 12) for k in (0, 12, 24, 36, 48)] == [
        datetime(2025, 2, 28, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC), datetime(2027, 2, 28, tzinfo=UTC),
        datetime(2028, 2, 29, tzinfo=UTC), datetime(2029, 2, 28, tzinfo=UTC)]
    assert rules.next_review(T, T, 1) == datetime(2025, 2, 28, 12, tzinfo=UTC)
    assert rules.next_review(T, datetime(2025, 2, 28, 12, tzinfo=UTC), 1) == datetime(2025, 3, 31, 12, tzinfo=UTC)


def test_nothing_happens_before_the_review_is_due():
    state = gold()
    for now in (T, T + timedelta(days=200), state.review_at - US):
        assert rules.review(state, now, LADDER, W, []) == (state, [])


def test_the_review_is_due_exactly_at_attainment_plus_window():
    r = datetime(2026, 1, 31, 12, tzinfo=UTC)
    new, changes = rules.review(gold(), r, LADDER, W, [])
    assert new == State(1, r, datetime(2027, 1, 31, 12, tzinfo=UTC))
    assert changes == [rules.Change(2, 1, r, "review")]


def test_spend_window_is_half_open_at_both_edges():
    r = datetime(2026, 1, 31, 12, tzinfo=UTC)
    start = datetime(2025, 1, 31, 12, tzinfo=UTC)
    cases = [
        ([(start, 1500)], 2),  # exactly at r − window: counted
        ([(start - US, 1500)], 1),  # just before the window: not counted
        ([(r - US, 1500)], 2),  # just before r: counted
        ([(r, 1500)], 1),  # at r itself: not counted
        ([(start, 700), (r - US, 800)], 2),
        ([(start, 700), (r - US, 799)], 1),
        ([(start, 1600), (r - US, -200)], 1),  # a return lowered it below gold
        ([(datetime(2025, 7, 1, tzinfo=UTC), 0)], 1),  # a voided transaction counts nothing
    ]
    for events, level in cases:
        assert rules.review(gold(), r, LADDER, W, events)[0].level == level, events


def test_a_kept_tier_is_reviewed_a_window_later_and_keeps_its_attainment():
    r = datetime(2026, 1, 31, 12, tzinfo=UTC)
    new, changes = rules.review(gold(), r, LADDER, W, [(T + timedelta(days=30), 2000)])
    assert changes == [] and new == State(2, T, datetime(2027, 1, 31, 12, tzinfo=UTC))


def test_drops_at_most_one_level_per_review_even_with_no_spend():
    r = datetime(2026, 1, 31, 12, tzinfo=UTC)
    new, changes = rules.review(gold(), r, LADDER, W, [(T, 10)])
    assert new.level == 1 and len(changes) == 1


def test_replays_every_overdue_review_in_order():
    events = [(T + timedelta(days=10), 1600),  # gold for the first year
              (datetime(2026, 3, 1, tzinfo=UTC), 600)]  # silver for the second
    r1, r2, r3 = (datetime(y, 1, 31, 12, tzinfo=UTC) for y in (2026, 2027, 2028))
    now = datetime(2028, 6, 1, tzinfo=UTC)
    new, changes = rules.review(gold(), now, LADDER, W, events)
    # r1: 1600 in the window -> gold kept; r2: 600 -> silver (drop one); r3 (silver attained at r2): 0 -> member
    assert changes == [rules.Change(2, 1, r2, "review"), rules.Change(1, 0, r3, "review")]
    assert new == State(0, r3, None)
    # the same answer whatever the intermediate reads: replaying step by step ends in the same state
    state = gold()
    for at in (r1 - US, r1, r2 - US, r2, datetime(2027, 6, 1, tzinfo=UTC), r3, now):
        state, _ = rules.review(state, at, LADDER, W, events)
    assert state == new


def test_the_entry_tier_is_never_reviewed():
    state = State(0, None, None)
    assert rules.review(state, datetime(2040, 1, 1, tzinfo=UTC), LADDER, W, []) == (state, [])


def test_a_changed_ladder_applies_to_the_next_review():
    r = datetime(2026, 1, 31, 12, tzinfo=UTC)
    events = [(T, 1600)]
    assert rules.review(gold(), r, LADDER, W, events)[0].level == 2
    assert rules.review(gold(), r, (0, 500, 2000), W, events)[0].level == 1


def test_spend_to_next():
    assert rules.spend_to_next(200, 0, LADDER) == (1, 300)
    assert rules.spend_to_next(700, 1, LADDER) == (2, 800)
    assert rules.spend_to_next(2000, 1, LADDER) == (2, 0)
    assert rules.spend_to_next(2000, 2, LADDER) == (None, None)


def test_upgraded_at_is_the_latest_change_only_when_it_was_an_upgrade_to_the_tier_held():
    assert rules.upgraded_at(None, "gold") is None
    assert rules.upgraded_at((rules.UPGRADE, "gold", T), "gold") == T
    assert rules.upgraded_at((rules.UPGRADE, "gold", T), "silver") is None  # a review has moved it since
    assert rules.upgraded_at((rules.REVIEW, "gold", T), "gold") is None


def test_a_reversed_upgrade_goes_back_as_far_as_the_sale_no_longer_carries_it():
    thresholds, sale, now = [0, 50_000, 150_000], datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)
    to_gold = rules.Change(0, 2, sale, rules.UPGRADE)
    gold = rules.State(2, sale, add_months(sale, 12))
    assert rules.reversed_upgrade(gold, to_gold, 150_000, thresholds, 12, now, attained_before=None) is None
    new, change = rules.reversed_upgrade(gold, to_gold, 60_000, thresholds, 12, now, attained_before=None)
    assert new == rules.State(1, sale, add_months(sale, 12)) and change == rules.Change(2, 1, now, rules.REVERSAL)
    new, _ = rules.reversed_upgrade(gold, to_gold, 0, thresholds, 12, now, attained_before=None)
    assert new == rules.State(0, None, None)
    silver_since = datetime(2025, 6, 10, tzinfo=UTC)  # back to the tier the sale found: as it was
    new, _ = rules.reversed_upgrade(gold, rules.Change(1, 2, sale, rules.UPGRADE), 0, thresholds, 12, now,
                                    attained_before=silver_since)
    assert new == rules.State(1, silver_since, datetime(2026, 6, 10, tzinfo=UTC))
    reviewed = rules.State(2, sale, add_months(sale, 24))  # judged again since: left to the next review
    assert rules.reversed_upgrade(reviewed, to_gold, 0, thresholds, 12, now, attained_before=None) is None
    # a tier between, left by an earlier return of the same sale, goes further when the rest comes back
    silver = rules.State(1, sale, add_months(sale, 12))
    new, change = rules.reversed_upgrade(silver, to_gold, 0, thresholds, 12, now, attained_before=None)
    assert new == rules.State(0, None, None) and change == rules.Change(1, 0, now, rules.REVERSAL)
    # later sales that reach a tier alone keep it
    assert rules.reversed_upgrade(gold, to_gold, 0, thresholds, 12, now, attained_before=None,
                                  spend_now=150_000) is None
    new, _ = rules.reversed_upgrade(gold, to_gold, 0, thresholds, 12, now, attained_before=None, spend_now=60_000)
    assert new == rules.State(1, sale, add_months(sale, 12))
