"""Voucher rules: amount, percent and free-item arithmetic with rounding, eligibility, stacking, audience,
validity, threshold issue; and the rate limiter's window rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.personalization.rules import message
from service.vouchers import rules

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FACTS = rules.MemberFacts(tier="member")


def campaign(kind: str = rules.AMOUNT_OFF, value: int | None = 500, **fields) -> rules.Campaign:
    return rules.Campaign(id="cmp_1", name="Test", kind=kind, value=value, **fields)


def voucher(c: rules.Campaign, code: str = "CODE1", member_id: str | None = "mem_1", **fields) -> rules.Voucher:
    return rules.Voucher(id=f"vch_{code}", code=code, campaign=c, member_id=member_id, status="active", **fields)


def item(line_id: str, net: int, *, sku: str = "X", category: str = "general", unit_price: int | None = None,
         units: int = 1) -> rules.Item:
    return rules.Item(line_id, sku, category, unit_price if unit_price is not None else net // units, units, net)


def test_amount_off_is_spread_by_net_and_never_exceeds_the_eligible_net():
    assert rules.discount(campaign(value=500), [item("a", 3000), item("b", 1000)]).per_line == {"a": 375, "b": 125}
    # 100 over three equal lines: 33.33 each rounds to 33; the largest remainder (ties: earliest) takes the cent.
    assert rules.discount(campaign(value=100), [item("a", 10), item("b", 10), item("c", 10)]).per_line == {
        "a": 10, "b": 10, "c": 10}
    assert rules.discount(campaign(value=100), [item("a", 300), item("b", 300), item("c", 300)]).per_line == {
        "a": 34, "b": 33, "c": 33}


def test_percent_off_rounds_half_up_once_per_eligible_line():
    assert rules.discount(campaign(rules.PERCENT_OFF, 10), [item("a", 101), item("b", 204)]).per_line == {
        "a": 10, "b": 20}  # 10.1 -> 10 and 20.4 -> 20, not 30.5 -> 31 over the two
    assert rules.discount(campaign(rules.PERCENT_OFF, 10), [item("a", 15), item("b", 15), item("c", 15)]).per_line == {
        "a": 2, "b": 2, "c": 2}  # 1.5 -> 2 on each line
    assert rules.discount(campaign(rules.PERCENT_OFF, 10), [item("a", 304)]).total == 30  # 30.4 -> 30
    assert rules.discount(campaign(rules.PERCENT_OFF, 10), [item("a", 305)]).total == 31  # 30.5 -> 31
    only_coffee = campaign(rules.PERCENT_OFF, 15, categories=frozenset({"coffee"}))
    result = rules.discount(only_coffee, [item("c", 999, category="coffee", units=3), item("t", 500)])
    assert result.per_line == {"c": 150}  # 149.85 -> 150; the tea is not eligible
    assert rules.discount(campaign(rules.PERCENT_OFF, 100), [item("a", 7), item("b", 3)]).total == 10


def test_free_item_takes_the_cheapest_eligible_paid_unit_up_to_the_cap():
    pastry = frozenset({"pastry"})
    lines = [item("a", 700, category="pastry", units=2), item("b", 300, category="pastry"), item("c", 200)]
    assert rules.discount(campaign(rules.FREE_ITEM, None, categories=pastry), lines) == rules.Discount(
        {"b": 300}, {"b": 1})
    assert rules.discount(campaign(rules.FREE_ITEM, 250, categories=pastry), lines).per_line == {"b": 250}
    # A line already discounted: one of two units costing 722 in all is worth 361.
    assert rules.discount(campaign(rules.FREE_ITEM, None), [item("a", 722, unit_price=401, units=2)]).per_line == {
        "a": 361}
    # An odd net: 721 over two units rounds half up to 361 for the free one.
    assert rules.unit_value(item("a", 721, unit_price=401, units=2)) == 361
    # No paid unit left: nothing to make free.
    assert rules.discount(campaign(rules.FREE_ITEM, None), [rules.Item("a", "X", "g", 400, 0, 0)]) == rules.Discount()


def apply(vouchers, items, **kw):
    return rules.apply(vouchers, member_id="mem_1", facts=kw.pop("facts", FACTS), items=items, now=NOW,
                       currency="USD", **kw)


def test_vouchers_apply_in_order_each_on_what_the_earlier_left():
    ten = voucher(campaign(rules.PERCENT_OFF, 10, stackable=True), "TEN")
    five = voucher(campaign(value=1000), "FIVE")
    items = [item("a", 5000)]
    assert [a.discount.total for a in apply([ten, five], items)] == [500, 1000]
    assert [a.discount.total for a in apply([five, ten], items)] == [1000, 400]


def test_at_most_one_non_stackable_voucher():
    a, b = voucher(campaign(), "A"), voucher(campaign(), "B")
    refusal = apply([a, b], [item("x", 5000)])
    assert isinstance(refusal, rules.Refusal) and refusal.voucher.code == "B"
    assert "only one non-stackable" in refusal.reason
    stackable = voucher(campaign(stackable=True), "S")
    assert len(apply([a, stackable, voucher(campaign(stackable=True), "T")], [item("x", 5000)])) == 3


def test_bearer_codes_count_against_the_per_member_limit():
    once = campaign(per_member_limit=1, stackable=True)
    a, b = voucher(once, "A", member_id=None), voucher(once, "B", member_id=None)
    assert len(apply([a], [item("x", 5000)], held={})) == 1
    assert "already had 1" in apply([a], [item("x", 5000)], held={"cmp_1": 1}).reason
    assert "at most 1 per member" in apply([a, b], [item("x", 5000)]).reason
    assert len(apply([voucher(once, "OWN")], [item("x", 5000)], held={"cmp_1": 1})) == 1  # already the member's


def test_why_a_voucher_does_not_apply():
    def why(v, items=(item("x", 1500),), facts=FACTS):
        reason = rules.why_not(v, member_id="mem_1", facts=facts, items=list(items),
                               basket_net=sum(i.net for i in items), now=NOW, currency="USD")
        return None if reason is None else str(reason)  # in English, as an error says it

    assert why(voucher(campaign())) is None
    assert why(voucher(campaign(), member_id=None)) is None  # a bearer code
    assert "another member" in why(voucher(campaign(), member_id="mem_2"))
    assert "at least 20.00 USD" in why(voucher(campaign(min_spend=2000)))
    assert "No item" in why(voucher(campaign(skus=frozenset({"LATTE"}))))
    assert "No item" in why(voucher(campaign()), items=[item("x", 0)])
    assert "can be used from 2026-11-24" in why(voucher(campaign(), valid_from=NOW + timedelta(days=1)))
    gold = campaign(audience=rules.Audience(tiers=frozenset({"gold"})))
    assert "not offered" in why(voucher(gold))
    assert why(voucher(gold), facts=rules.MemberFacts(tier="gold")) is None


def test_whether_a_voucher_is_usable_at_all_without_a_basket():
    """The app's offers have no basket: the owner, the start and the audience are checked, the spend and the
    items are not (they are the basket's)."""
    def why(v, facts=FACTS):
        reason = rules.why_not_usable(v, member_id="mem_1", facts=facts, now=NOW)
        return None if reason is None else str(reason)

    assert why(voucher(campaign(min_spend=1_000_000, skus=frozenset({"LATTE"})))) is None
    assert why(voucher(campaign(), member_id=None)) is None
    assert "another member" in why(voucher(campaign(), member_id="mem_2"))
    assert "can be used from 2026-11-24" in why(voucher(campaign(), valid_from=NOW + timedelta(days=1)))
    assert why(voucher(campaign(), valid_from=NOW)) is None
    new_members = campaign(audience=rules.Audience(lifecycles=frozenset({"new"})))
    assert "not offered" in why(voucher(new_members), facts=rules.MemberFacts(tier="member", lifecycle="active"))
    assert why(voucher(new_members), facts=rules.MemberFacts(tier="member", lifecycle="new")) is None


def test_a_reason_and_a_description_in_the_members_language():
    reason = rules.why_not(voucher(campaign(min_spend=2000)), member_id="mem_1", facts=FACTS,
                           items=[item("x", 1500)], basket_net=1500, now=NOW, currency="USD")
    assert message("zh-CN", reason.key, **reason.values) == "优惠券 CODE1 需消费满 20.00 USD，本单为 15.00 USD。"
    assert str(reason) == "Voucher CODE1 needs a spend of at least 20.00 USD; this basket comes to 15.00 USD."
    described = campaign(rules.FREE_ITEM, 250).describe("USD")
    assert (str(described), message("zh-CN", described.key, **described.values)) == (
        "One item free (up to 2.50 USD)", "免费一件商品（最高 2.50 USD）")


def test_audience_matches_known_facts_and_never_matches_an_unknown_one():
    friends = rules.Audience(quadrants=frozenset({"true_friend"}))
    assert rules.audience_matches(None, FACTS)
    assert rules.audience_matches(rules.Audience(), FACTS)
    assert not rules.audience_matches(friends, FACTS)  # quadrant unknown: no match
    assert rules.audience_matches(friends, rules.MemberFacts(tier="member", quadrant="true_friend"))
    both = rules.Audience(tiers=frozenset({"gold"}), lifecycles=frozenset({"active"}))
    assert rules.audience_matches(both, rules.MemberFacts(tier="gold", lifecycle="active"))
    assert not rules.audience_matches(both, rules.MemberFacts(tier="gold", lifecycle="lapsed"))


def test_validity_status_and_issue_windows():
    until = NOW + timedelta(days=10)
    assert rules.validity(campaign(valid_days=30), NOW) == (None, NOW + timedelta(days=30))
    assert rules.validity(campaign(valid_days=30, valid_until=until), NOW) == (None, until)
    assert rules.validity(campaign(), NOW) == (None, None)
    assert rules.status_at("active", NOW, NOW) == "expired"
    assert rules.status_at("active", NOW + timedelta(seconds=1), NOW) == "active"
    assert rules.status_at("redeemed", NOW - timedelta(days=1), NOW) == "redeemed"
    assert rules.can_issue(campaign(active=False), NOW) is not None
    assert rules.can_issue(campaign(valid_until=NOW), NOW) is not None
    assert rules.over_limit(3, 2, 1) is False and rules.over_limit(3, 3, 1) is True and not rules.over_limit(None, 9, 9)


def test_valid_days_of_a_voucher_issued_before_its_campaign_starts_count_from_the_start():
    """Handed out ahead of its campaign, a voucher gets its days in full from the start: counted from the issue it
    ended before it began, and no one could ever use it."""
    start = NOW + timedelta(days=30)
    assert rules.validity(campaign(valid_from=start, valid_days=7), NOW) == (start, start + timedelta(days=7))
    assert rules.validity(campaign(valid_from=start, valid_days=7, valid_until=start + timedelta(days=3)), NOW) == (
        start, start + timedelta(days=3))  # never past the campaign's end
    began = NOW - timedelta(days=30)
    assert rules.validity(campaign(valid_from=began, valid_days=7), NOW) == (began, NOW + timedelta(days=7))


def test_threshold_issue_one_voucher_per_campaign_the_sale_reaches():
    spend_100 = campaign(auto_issue_spend_threshold=10_000)
    spend_50 = rules.Campaign(id="cmp_2", name="50", kind=rules.AMOUNT_OFF, value=200, auto_issue_spend_threshold=5_000)
    gold = rules.Campaign(id="cmp_3", name="g", kind=rules.AMOUNT_OFF, value=200, auto_issue_spend_threshold=1,
                          audience=rules.Audience(tiers=frozenset({"gold"})))
    plain = campaign()
    assert rules.auto_issued([spend_100, spend_50, gold, plain], 9_999, FACTS, earned_at=NOW, now=NOW) == [spend_50]
    assert rules.auto_issued([spend_100, spend_50], 25_000, FACTS, earned_at=NOW, now=NOW) == [spend_100, spend_50]
    assert rules.auto_issued([campaign(auto_issue_spend_threshold=1, active=False)], 100, FACTS, earned_at=NOW,
                             now=NOW) == []


def test_a_threshold_campaign_set_up_ahead_of_its_start_rewards_sales_from_its_start_on():
    december = campaign(auto_issue_spend_threshold=1, valid_from=NOW + timedelta(days=30))
    assert rules.auto_issued([december], 100, FACTS, earned_at=NOW, now=NOW) == []
    start = NOW + timedelta(days=30)
    assert rules.auto_issued([december], 100, FACTS, earned_at=start, now=start) == [december]


def test_a_backdated_sale_earns_threshold_vouchers_as_at_its_time():
    """As its points do: from campaigns that existed and could issue then, valid from then; not one already over."""
    month = campaign(auto_issue_spend_threshold=1, valid_days=30, created_at=NOW - timedelta(days=100))
    a_week_ago, two_months_ago = NOW - timedelta(days=7), NOW - timedelta(days=60)
    assert rules.auto_issued([month], 100, FACTS, earned_at=a_week_ago, now=NOW) == [month]
    assert rules.validity(month, a_week_ago) == (None, a_week_ago + timedelta(days=30))  # 23 days left
    assert rules.auto_issued([month], 100, FACTS, earned_at=two_months_ago, now=NOW) == []  # ended 30 days ago
    assert rules.auto_issued([month], 100, FACTS, earned_at=NOW - timedelta(days=101), now=NOW) == []  # not yet made
    open_ended = campaign(auto_issue_spend_threshold=1, created_at=NOW - timedelta(days=100))
    assert rules.auto_issued([open_ended], 100, FACTS, earned_at=two_months_ago, now=NOW) == [open_ended]
    ended = campaign(auto_issue_spend_threshold=1, valid_until=NOW - timedelta(days=10),
                     created_at=NOW - timedelta(days=100))
    assert rules.auto_issued([ended], 100, FACTS, earned_at=NOW - timedelta(days=11), now=NOW) == []  # over by now
    assert rules.auto_issued([ended], 100, FACTS, earned_at=NOW, now=NOW) == []


def test_offers_order_and_expiry_nudges():
    c = campaign()
    soon, later, never = (voucher(c, "SOON", valid_until=NOW + timedelta(days=3)),
                          voucher(c, "LATER", valid_until=NOW + timedelta(days=8)), voucher(c, "NEVER"))
    assert [v.code for v in rules.soonest_expiring_first([never, later, soon])] == ["SOON", "LATER", "NEVER"]
    assert [v.code for v in rules.expiring_soon([never, later, soon], NOW)] == ["SOON"]


def test_a_return_withdraws_the_vouchers_whose_threshold_the_sale_no_longer_reaches():
    earned = [("vch_a", 10_000), ("vch_b", 5_000), ("vch_c", None)]  # the last: from before migration 0021
    assert rules.withdrawn_by_return(earned, 10_000) == []
    assert rules.withdrawn_by_return(earned, 9_999) == ["vch_a"]
    assert rules.withdrawn_by_return(earned, 1) == ["vch_a", "vch_b"]
    assert rules.withdrawn_by_return(earned, 0) == ["vch_a", "vch_b", "vch_c"]  # nothing left: as a void
