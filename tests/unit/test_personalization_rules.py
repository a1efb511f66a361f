from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from service.personalization import rules
from service.referrals import rules as referral_rules

TODAY = date(2026, 6, 15)
NOW = datetime(2026, 6, 15, 10, tzinfo=UTC)


def figures(*, since_days=400, purchases=0, first_days=None, last_days=None, frequency=0, monetary=0):
    day = lambda n: None if n is None else TODAY - timedelta(days=n)  # noqa: E731
    return rules.Figures(day(since_days), purchases, day(first_days), day(last_days), frequency, monetary)


def test_quadrants_split_at_the_thresholds_inclusive():
    t = rules.Thresholds(min_frequency=3, min_monetary=5_000)
    assert rules.quadrant(3, 5_000, t) == "true_friend"
    assert rules.quadrant(2, 5_000, t) == "butterfly"
    assert rules.quadrant(3, 4_999, t) == "barnacle"
    assert rules.quadrant(0, 0, t) == "stranger"


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"since_days": 29}, "new"),
    ({"since_days": 30}, "active"),  # enrolled 30 days ago, never bought: active until 60 days
    ({"since_days": 60}, "at_risk"),
    ({"since_days": 181}, "lapsed"),
    ({"purchases": 1, "first_days": 59, "last_days": 59}, "active"),
    ({"purchases": 1, "first_days": 60, "last_days": 60}, "at_risk"),  # no usual gap yet: 60 days
    ({"purchases": 3, "first_days": 300, "last_days": 100}, "active"),  # gap 100: at risk from 200 days...
    ({"purchases": 3, "first_days": 360, "last_days": 160}, "active"),
    ({"purchases": 3, "first_days": 380, "last_days": 181}, "lapsed"),  # ...but lapsed after 180 anyway
    ({"purchases": 5, "first_days": 140, "last_days": 100}, "at_risk"),  # gap 10: the 60-day floor
    ({"purchases": 5, "first_days": 140, "last_days": 59}, "active"),
    ({"purchases": 3, "first_days": 160, "last_days": 80}, "at_risk"),  # gap 40: at risk from 80 days
    ({"purchases": 3, "first_days": 159, "last_days": 79}, "active"),
    ({"since_days": 10, "purchases": 1, "first_days": 100, "last_days": 100}, "at_risk"),  # imported history
])
def test_lifecycle(kwargs, expected):
    if kwargs.get("first_days") is not None:  # a customer since the first sale when that came before enrollment
        kwargs = {**kwargs, "since_days": max(kwargs.get("since_days", 0), kwargs["first_days"])}
    assert rules.lifecycle(figures(**kwargs), TODAY) == expected


def test_median_thresholds_sit_just_above_the_median_of_buyers():
    window = [(1, 1_000), (2, 4_000), (3, 9_000), (4, 16_000), (0, 0)]  # the non-buyer does not count
    assert rules.median_thresholds(window) == rules.Thresholds(3, 6_501)
    assert rules.median_thresholds([(1, 500)] * 9 + [(5, 90_000)]) == rules.Thresholds(2, 501)
    assert rules.median_thresholds([]) == rules.Thresholds(rules.DEFAULT_MIN_FREQUENCY, rules.DEFAULT_MIN_MONETARY)
    assert rules.median_thresholds(window, fixed_frequency=10) == rules.Thresholds(10, 6_501)


def test_segment_recency_and_window():
    seg = rules.segment(figures(purchases=2, first_days=40, last_days=12, frequency=2, monetary=3_000), TODAY,
                        rules.Thresholds(2, 1_000))
    assert seg == rules.Segment("true_friend", "active", 12, 2, 3_000)
    assert rules.window_start(TODAY) == TODAY - timedelta(days=364)


def test_birthday_week_across_the_new_year_and_29_february():
    assert rules.birthday_occurrence(date(1990, 1, 2), date(2026, 12, 30)) == date(2027, 1, 2)
    assert rules.birthday_occurrence(date(1990, 12, 30), date(2027, 1, 2)) == date(2026, 12, 30)
    assert rules.birthday_occurrence(date(1990, 1, 2), date(2026, 12, 29)) is None  # 4 days before
    assert rules.birthday_occurrence(date(2000, 2, 29), date(2027, 3, 2)) == date(2027, 2, 28)
    assert rules.birthday_occurrence(date(2000, 2, 29), date(2028, 2, 29)) == date(2028, 2, 29)
    assert rules.birthday_occurrence(None, TODAY) is None


def visit(**changes) -> rules.Visit:
    base = {"today": TODAY, "birthday": None, "upgraded_at": None, "now": NOW, "lifecycle": "active",
            "purchases": 3}
    return rules.Visit(**{**base, **changes})


def test_occasions_by_priority():
    assert rules.occasion(visit(birthday=date(1980, 6, 18), upgraded_at=NOW, lifecycle="lapsed",
                                purchases=9)) == "birthday"
    assert rules.occasion(visit(upgraded_at=NOW - timedelta(days=30), lifecycle="lapsed")) == "tier_upgrade"
    assert rules.occasion(visit(upgraded_at=NOW - timedelta(days=31), lifecycle="at_risk")) == "welcome_back"
    assert rules.occasion(visit(lifecycle="lapsed", purchases=0)) == "welcome"  # never came: not "back"
    assert rules.occasion(visit(purchases=9)) == "milestone"
    assert rules.occasion(visit(purchases=0, lifecycle="new")) == "welcome"
    assert rules.occasion(visit()) == "regular"
    assert [v for v in range(1, 401) if rules.milestone(v)] == [10, 25, 50, 100, 200, 300, 400]


def test_locales_fall_back_by_language_then_to_english():
    available = ["en", "zh-CN", "de"]
    assert rules.resolve_locale("zh-CN", available) == "zh-CN"
    assert rules.resolve_locale("zh-cn", available) == "zh-CN"
    assert rules.resolve_locale("zh-Hans-CN", available) == "zh-CN"
    assert rules.resolve_locale("de-AT", available) == "de"
    assert rules.resolve_locale("fr", available) == "en"
    assert rules.resolve_locale(None, available) == "en"


def test_program_locales_are_kept_in_the_built_ins_spelling():
    assert [rules.canonical_locale(t) for t in ("zh-cn", "ZH-CN", "EN", "zh-hans-cn", "de-at", "es-419")] == [
        "zh-CN", "zh-CN", "en", "zh-Hans-CN", "de-AT", "es-419"]
    # an override written `zh-cn` is the built-in Chinese one, not a locale of its own filled from English
    table = rules.templates(rules.canonical_greetings({"zh-cn": {"birthday": "{name}，生日快乐！"}}))
    assert set(table) == {"en", "zh-CN"} and table["zh-CN"]["welcome"] == rules.TEMPLATES["zh-CN"]["welcome"]
    assert table["zh-CN"]["birthday"] == "{name}，生日快乐！"
    # two spellings (refused at write, possible in a program stored before): the canonical one's win
    assert rules.canonical_greetings({"zh-CN": {"regular": "A", "evening": "E"}, "zh-cn": {"regular": "B"}}) == {
        "zh-CN": {"regular": "A", "evening": "E"}}
    assert rules.locale_clashes(["en", "zh-CN", "zh-cn", "ZH-CN", "de"]) == [["ZH-CN", "zh-CN", "zh-cn"]]
    assert rules.locale_clashes(["en", "zh-CN"]) == []


def test_templates_are_filled_never_evaluated():
    assert rules.render("{name.__class__} {name} {0} {}", {"name": "Ann"}) == "{name.__class__} Ann {0} {}"
    table = rules.templates({"en": {"regular": "Yo {name}"}, "it": {"welcome": "Ciao {name}"}})
    assert table["en"]["regular"] == "Yo {name}" and table["it"]["regular"] == "Yo {name}"
    assert table["zh-CN"]["regular"] == rules.TEMPLATES["zh-CN"]["regular"]
    assert rules.greeting_text(table["en"], "birthday", name="Ann", hour=23, tier="Gold",
                               visits=4) == "Good evening, Ann! Happy birthday!"
    assert [rules.part_of_day(h) for h in (4, 5, 11, 12, 17, 18)] == ["evening", "morning", "morning", "afternoon",
                                                                       "afternoon", "evening"]


def test_offer_ranking_and_audiences():
    soon, late = NOW + timedelta(days=1), NOW + timedelta(days=9)
    offers = [("campaign", True, None, 900), ("points", True, None, 100), ("voucher", True, late, 500),
              ("voucher", True, soon, 100), ("punch_reward", False, None, 0), ("tier_discount", True, None, 50)]
    ranked = sorted(offers, key=lambda o: rules.rank_key(*o))
    assert ranked == [("voucher", True, soon, 100), ("voucher", True, late, 500), ("points", True, None, 100),
                      ("tier_discount", True, None, 50), ("punch_reward", False, None, 0),
                      ("campaign", True, None, 900)]
    # Instants, whatever their offsets: 10:00 at +14:00 is 20:00 UTC the day before, before 05:00 UTC
    east = datetime(2030, 1, 2, 10, 0, tzinfo=timezone(timedelta(hours=14)))
    west = datetime(2030, 1, 2, 5, 0, tzinfo=UTC)
    assert sorted([west, east], key=lambda at: rules.rank_key("voucher", True, at, 0)) == [east, west]
    assert rules.audience_matches(None, {"gold"})
    assert rules.audience_matches(["gold", "lapsed"], {"member", "lapsed"})
    assert not rules.audience_matches(["true_friend"], {"gold", "active", "stranger"})


def test_points_an_offer_says_the_member_may_use():
    assert rules.usable_points(800, max_burn_percent=100, basket_limit=None) == 800  # the app: no basket
    assert rules.usable_points(800, max_burn_percent=50, basket_limit=250) == 250
    assert rules.usable_points(100, max_burn_percent=50, basket_limit=250) == 100
    assert rules.usable_points(800, max_burn_percent=0, basket_limit=None) == 0  # points may pay for nothing
    assert rules.usable_points(800, max_burn_percent=0, basket_limit=0) == 0
    assert rules.usable_points(-30, max_burn_percent=100, basket_limit=None) == 0  # a debt


def test_birthday_bonus_once_a_year():
    birthday = date(1990, 6, 17)
    assert rules.birthday_bonus_year(birthday, TODAY, 200, None) == 2026
    assert rules.birthday_bonus_year(birthday, TODAY, 200, 2026) is None
    assert rules.birthday_bonus_year(birthday, TODAY, 0, None) is None
    assert rules.birthday_bonus_year(birthday, TODAY - timedelta(days=2), 200, 2025) is None  # 4 days before
    assert rules.birthday_bonus_year(date(1990, 1, 1), date(2026, 12, 30), 200, 2026) == 2027
    assert rules.birthday_bonus_year(birthday, TODAY - timedelta(days=365), 200, 2026) is None  # a year before
    # 2026's taken back (its sale voided): 2026 is due again, 2025 stays closed
    assert rules.birthday_bonus_year(birthday, TODAY, 200, rules.birthday_bonus_year_taken_back(2026)) == 2026
    assert rules.birthday_bonus_year(birthday, TODAY - timedelta(days=365), 200,
                                     rules.birthday_bonus_year_taken_back(2026)) is None


def test_referral_rules():
    kwargs = {"referrer_points": 500, "referee_points": 500}
    assert referral_rules.reward_due(2_000, 2_000, already_rewarded=False, **kwargs)
    assert not referral_rules.reward_due(1_999, 2_000, already_rewarded=False, **kwargs)
    assert not referral_rules.reward_due(5_000, 2_000, already_rewarded=True, **kwargs)
    assert not referral_rules.reward_due(5_000, 0, already_rewarded=False, referrer_points=0, referee_points=0)
    # the referrer's lock is taken before pricing, on the subtotal: whenever the net may reach the first spend
    assert referral_rules.may_credit_referrer(2_000, 2_000, already_rewarded=False, referrer_points=500)
    assert not referral_rules.may_credit_referrer(1_999, 2_000, already_rewarded=False, referrer_points=500)
    assert not referral_rules.may_credit_referrer(5_000, 2_000, already_rewarded=True, referrer_points=500)
    assert not referral_rules.may_credit_referrer(5_000, 2_000, already_rewarded=False, referrer_points=0)
    for net, subtotal in ((2_000, 2_000), (2_500, 3_000), (1_999, 5_000), (0, 0)):
        due = referral_rules.reward_due(net, 2_000, already_rewarded=False, referrer_points=500, referee_points=0)
        assert not due or referral_rules.may_credit_referrer(subtotal, 2_000, already_rewarded=False,
                                                            referrer_points=500)
    assert referral_rules.self_referral(("+1415", "a@x.com"), (None, "a@x.com"))
    assert not referral_rules.self_referral(("+1415", None), ("+1416", None))


def test_segment_moves_in_the_segments_order_first_segmentations_first():
    moves = [("stranger", "true_friend", 2), (None, "barnacle", 1), ("true_friend", "butterfly", 3),
             ("butterfly", "butterfly", 9), ("true_friend", "stranger", 0), (None, "true_friend", 4)]
    assert rules.ordered_moves(moves, rules.QUADRANTS) == [
        (None, "true_friend", 4), (None, "barnacle", 1), ("true_friend", "butterfly", 3),
        ("stranger", "true_friend", 2)]
