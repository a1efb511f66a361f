"""Personalization decisions (DESIGN §6), pure: segments and lifecycle, greetings, the birthday week, the order
of offers, the words of offers and nudges in the member's language. "Now" is always a parameter.

Segments (trailing :data:`WINDOW_DAYS` days, UTC days of each sale's ``occurred_at``): frequency (sales),
monetary (net spend, returns subtracted, voids removed), recency (days since the last sale). A member is
*frequent* with ``frequency >= min_frequency`` and *high* with ``monetary >= min_monetary``; the sweep sets each
threshold just above the median of the members who bought in the window (so ties at the median count as
low), unless the program fixes it.

Lifecycle, judged on days: ``new`` while the member has been a customer for fewer than 30 days (since
enrollment or their first sale, whichever is earlier: imported histories predate the enrollment), ``lapsed``
after more than 180 days without a sale, ``at_risk`` after twice the member's usual gap between sales (their
lifetime average; at least 60 days), else ``active``. A member who never bought counts from enrollment.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from service.clock import utc

WINDOW_DAYS = 365
NEW_DAYS = 30
AT_RISK_MIN_DAYS = 60
LAPSED_DAYS = 180
QUADRANTS = ("true_friend", "butterfly", "barnacle", "stranger")
LIFECYCLES = ("new", "active", "at_risk", "lapsed")
# Thresholds used before the first sweep (and when the program fixes neither).
DEFAULT_MIN_FREQUENCY = 2
DEFAULT_MIN_MONETARY = 10_000


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_frequency: int
    min_monetary: int


@dataclass(frozen=True, slots=True)
class Figures:
    """What a member's segment is computed from, as of one day."""

    customer_since: date  # enrollment or first sale, whichever is earlier
    purchases: int  # lifetime, up to the day
    first_purchase: date | None
    last_purchase: date | None
    frequency: int  # in the window
    monetary: int  # in the window


@dataclass(frozen=True, slots=True)
class Segment:
    quadrant: str
    lifecycle: str
    recency_days: int | None
    frequency: int
    monetary: int


def window_start(as_of: date) -> date:
    """The first day of the trailing window ending with ``as_of`` (inclusive; :data:`WINDOW_DAYS` days)."""
    return as_of - timedelta(days=WINDOW_DAYS - 1)


def quadrant(frequency: int, monetary: int, thresholds: Thresholds) -> str:
    frequent = frequency >= thresholds.min_frequency
    high = monetary >= thresholds.min_monetary
    if frequent:
        return "true_friend" if high else "barnacle"
    return "butterfly" if high else "stranger"


def usual_gap_days(purchases: int, first: date | None, last: date | None) -> float | None:
    """The member's average number of days between sales (None with fewer than two sales)."""
    if purchases < 2 or first is None or last is None:
        return None
    return (last - first).days / (purchases - 1)


def lifecycle(figures: Figures, as_of: date) -> str:
    if (as_of - figures.customer_since).days < NEW_DAYS:
        return "new"
    since = figures.last_purchase or figures.customer_since
    idle = (as_of - since).days
    if idle > LAPSED_DAYS:
        return "lapsed"
    gap = usual_gap_days(figures.purchases, figures.first_purchase, figures.last_purchase)
    if idle >= max(2 * gap if gap else 0, AT_RISK_MIN_DAYS):
        return "at_risk"
    return "active"


def segment(figures: Figures, as_of: date, thresholds: Thresholds) -> Segment:
    return Segment(
        quadrant=quadrant(figures.frequency, figures.monetary, thresholds),
        lifecycle=lifecycle(figures, as_of),
        recency_days=None if figures.last_purchase is None else (as_of - figures.last_purchase).days,
        frequency=figures.frequency, monetary=figures.monetary,
    )


def median_thresholds(window: Iterable[tuple[int, int]], *, fixed_frequency: int | None = None,
                      fixed_monetary: int | None = None) -> Thresholds:
    """Thresholds just above the medians of ``(frequency, monetary)`` over the members who bought in the window
    (the defaults when nobody did); a value the program fixes wins."""
    rows = [(f, m) for f, m in window if f > 0]
    min_frequency = DEFAULT_MIN_FREQUENCY
    min_monetary = DEFAULT_MIN_MONETARY
    if rows:
        min_frequency = int(statistics.median(f for f, _ in rows)) + 1
        min_monetary = int(statistics.median(m for _, m in rows)) + 1
    return Thresholds(fixed_frequency if fixed_frequency is not None else min_frequency,
                      fixed_monetary if fixed_monetary is not None else min_monetary)


# -- greetings -----------------------------------------------------------------------------------------------------

OCCASIONS = ("birthday", "tier_upgrade", "welcome_back", "milestone", "welcome", "regular")
BIRTHDAY_DAYS = 3  # the birthday "week": the day itself ± 3 days
TIER_UPGRADE_DAYS = 30
DEFAULT_LOCALE = "en"

TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "morning": "Good morning", "afternoon": "Good afternoon", "evening": "Good evening",
        "birthday": "{salutation}, {name}! Happy birthday!",
        "tier_upgrade": "{salutation}, {name}! Welcome to {tier}!",
        "welcome_back": "{salutation}, {name}! Welcome back, we missed you.",
        "milestone": "{salutation}, {name}! This is your visit number {visits}: thank you!",
        "welcome": "{salutation}, {name}! Welcome, and thank you for joining.",
        "regular": "{salutation}, {name}!",
    },
    "zh-CN": {
        "morning": "早上好", "afternoon": "下午好", "evening": "晚上好",
        "birthday": "{name}，{salutation}！祝您生日快乐！",
        "tier_upgrade": "{name}，{salutation}！恭喜升级为{tier}！",
        "welcome_back": "{name}，{salutation}！欢迎回来，我们想念您。",
        "milestone": "{name}，{salutation}！这是您第{visits}次光临，感谢您！",
        "welcome": "{name}，{salutation}！欢迎您，感谢加入。",
        "regular": "{name}，{salutation}！",
    },
}


def milestone(visit: int) -> bool:
    """The 10th, 25th and 50th visit, then every 100th."""
    return visit in (10, 25, 50) or (visit >= 100 and visit % 100 == 0)


def part_of_day(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 18:
        return "afternoon"
    return "evening"


def birthday_in(birthday: date, year: int) -> date:
    """The birthday's date in ``year`` (29 February is kept on 28 February in other years)."""
    try:
        return birthday.replace(year=year)
    except ValueError:
        return date(year, 2, 28)


def birthday_occurrence(birthday: date | None, today: date) -> date | None:
    """The birthday whose week (± :data:`BIRTHDAY_DAYS` days) contains ``today``, or None."""
    if birthday is None:
        return None
    for year in (today.year - 1, today.year, today.year + 1):
        day = birthday_in(birthday, year)
        if abs((today - day).days) <= BIRTHDAY_DAYS:
            return day
    return None


@dataclass(frozen=True, slots=True)
class Visit:
    """What the greeting knows about the member at the till."""

    today: date  # in the store's time zone
    birthday: date | None
    upgraded_at: datetime | None  # when the member reached the current tier by spending
    now: datetime
    lifecycle: str
    purchases: int  # committed so far (this visit not counted)


def occasion(visit: Visit) -> str:
    """The most relevant occasion, by priority: birthday, tier upgrade, welcome back, milestone, welcome."""
    if birthday_occurrence(visit.birthday, visit.today) is not None:
        return "birthday"
    if visit.upgraded_at is not None and visit.now - timedelta(days=TIER_UPGRADE_DAYS) <= visit.upgraded_at \
            <= visit.now:
        return "tier_upgrade"
    if visit.purchases > 0 and visit.lifecycle in ("at_risk", "lapsed"):
        return "welcome_back"
    if milestone(visit.purchases + 1):
        return "milestone"
    if visit.purchases == 0:
        return "welcome"
    return "regular"


def resolve_locale(locale: str | None, available: Iterable[str]) -> str:
    """The member's locale if there are templates for it (case-insensitively), else one of the same language
    (``zh`` or ``zh-Hans-CN`` → ``zh-CN``), else English."""
    available = list(available)
    if not locale:
        return DEFAULT_LOCALE
    by_lower = {a.lower(): a for a in available}
    if locale.lower() in by_lower:
        return by_lower[locale.lower()]
    language = locale.split("-")[0].lower()
    same = sorted(a for a in available if a.split("-")[0].lower() == language)
    return same[0] if same else DEFAULT_LOCALE


def canonical_locale(locale: str) -> str:
    """A locale tag in its conventional case (BCP 47, RFC 5646 §2.1.1): the language in lower case, a four-letter
    script in title case, a two-letter region in upper case, anything else in lower case (``zh-cn`` → ``zh-CN``,
    ``ZH-hans-cn`` → ``zh-Hans-CN``): the built-ins' own spelling. Tags are case-insensitive, but the program's
    templates are keyed by them, so each locale needs one spelling."""
    language, *subtags = locale.split("-")
    spelled = [language.lower()]
    for subtag in subtags:
        if len(subtag) == 4 and subtag.isalpha():
            spelled.append(subtag.title())
        elif len(subtag) == 2 and subtag.isalpha():
            spelled.append(subtag.upper())
        else:
            spelled.append(subtag.lower())
    return "-".join(spelled)


def locale_clashes(locales: Iterable[str]) -> list[list[str]]:
    """The spellings that name one locale more than once (``["zh-CN", "zh-cn"]``), each group sorted."""
    groups: dict[str, list[str]] = {}
    for locale in locales:
        groups.setdefault(canonical_locale(locale), []).append(locale)
    return [sorted(group) for group in groups.values() if len(group) > 1]


def canonical_greetings(overrides: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The program's ``greetings`` keyed by :func:`canonical_locale`: an override written ``zh-cn`` overrides the
    built-in ``zh-CN`` (it was a locale of its own, filled from English, which Chinese members were then greeted
    from). Two spellings of one locale (refused when the program is written, possible in one stored before) are
    merged, the canonical spelling's templates laid last, over the others'."""
    merged: dict[str, dict[str, str]] = {}
    for locale in sorted(overrides, key=lambda key: (key == canonical_locale(key), key)):
        merged.setdefault(canonical_locale(locale), {}).update(overrides[locale])
    return merged


def templates(overrides: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The built-in templates with the program's ``greetings`` laid over them (a locale only the program has
    falls back to the program's English for what it leaves out)."""
    merged = {locale: {**t, **overrides.get(locale, {})} for locale, t in TEMPLATES.items()}
    for locale, own in overrides.items():
        if locale not in merged:
            merged[locale] = {**merged[DEFAULT_LOCALE], **own}
    return merged


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill ``{name}``-style placeholders; an unknown one is left as written (templates come from an admin and
    are never evaluated)."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def greeting_text(table: Mapping[str, str], occasion_: str, *, name: str | None, hour: int, tier: str,
                  visits: int) -> str:
    salutation = table[part_of_day(hour)]
    return render(table[occasion_], {"name": name or "", "salutation": salutation, "tier": tier,
                                     "visits": visits})


# -- offers and nudges ---------------------------------------------------------------------------------------------

POINTS_EXPIRY_NUDGE_DAYS = 30
VOUCHER_EXPIRY_NUDGE_DAYS = 7
# Usable-now offers first, in this order, then campaign offers; within a kind, what applies to the basket first,
# then what expires soonest, then the larger value.
KIND_RANK = {"punch_reward": 0, "voucher": 1, "points": 2, "tier_discount": 3, "campaign": 4}
FAR_FUTURE = datetime.max.replace(tzinfo=None)


def rank_key(kind: str, applicable: bool, expires_at: datetime | None, value: int) -> tuple:
    expiry = utc(expires_at).replace(tzinfo=None) if expires_at is not None else FAR_FUTURE
    return (kind == "campaign", not applicable, KIND_RANK.get(kind, len(KIND_RANK)), expiry, -value)


def audience_matches(audience_segments: Sequence[str] | None, member_segments: Iterable[str]) -> bool:
    """An audience (tier codes, quadrants, lifecycles; None: everyone) matches a member who has any of them."""
    return audience_segments is None or bool(set(audience_segments) & set(member_segments))


def usable_points(balance: int, *, max_burn_percent: int, basket_limit: int | None) -> int:
    """The points the points offer says the member may use: none with a debt, none when points may pay for no
    basket (``max_burn_percent`` 0: every burn is refused), else the balance, on a basket at most what it may
    take (``basket_limit``; None: no basket, the app)."""
    if balance <= 0 or max_burn_percent <= 0:
        return 0
    return balance if basket_limit is None else min(balance, basket_limit)


def missing_stamps_worth_a_nudge(missing: int) -> bool:
    return missing in (1, 2)


MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "punch_title": "Free item: {program}",
        "punch_description": "One eligible item free, worth {value} in this basket",
        "punch_description_any": "One eligible item free",
        "punch_reason": "No item in this basket can be made free by the {program} reward.",
        "points_title": "Pay with points",
        "points_description": "Use up to {points} points, worth {value}",
        "points_reason_debt": "The member owes {points} points from a return; points can be used again once repaid.",
        "points_reason_basket": "Points cannot pay for this basket.",
        "tier_title": "{tier} discount",
        "tier_description": "{percent}% off as a {tier} member",
        "campaign_title": "{name}",
        "campaign_description": "{multiplier}× points on {what} until {until}",
        "campaign_everything": "everything",
        "campaign_reason": "Nothing in this basket earns the {name} bonus.",
        "campaign_reason_outdone": "A larger bonus applies to this basket: {name} adds nothing to it.",
        "nudge_stamps": "{missing} more {noun} to a free item on the {program}",
        "stamp": "stamp", "stamps": "stamps",
        "nudge_tier": "Spend {amount} more to reach {tier}",
        "nudge_points_expiry": "{points} points expire on {date}",
        "nudge_voucher_expiry": "Your voucher {name} ({code}) expires on {date}",
        "voucher_amount_off": "{amount} off",
        "voucher_percent_off": "{percent}% off",
        "voucher_free_item": "One item free",
        "voucher_free_item_up_to": "One item free (up to {amount})",
        "voucher_valid_until": "{offer}, valid until {date}",
        "voucher_reason_owner": "Voucher {code} belongs to another member.",
        "voucher_reason_not_yet": "Voucher {code} can be used from {date}.",
        "voucher_reason_audience": "Voucher {code} ({name}) is not offered to this member.",
        "voucher_reason_min_spend": "Voucher {code} needs a spend of at least {min_spend}; this basket comes to {net}.",
        "voucher_reason_no_item": "No item in this basket qualifies for voucher {code} ({name}).",
    },
    "zh-CN": {
        "punch_title": "免费商品：{program}",
        "punch_description": "可免费获得一件符合条件的商品，本单价值 {value}",
        "punch_description_any": "可免费获得一件符合条件的商品",
        "punch_reason": "本单没有可用{program}奖励免费的商品。",
        "points_title": "积分抵扣",
        "points_description": "最多可用 {points} 积分，价值 {value}",
        "points_reason_debt": "因退货欠 {points} 积分，还清后才能再用积分。",
        "points_reason_basket": "本单不能用积分支付。",
        "tier_title": "{tier}折扣",
        "tier_description": "{tier}会员享 {percent}% 折扣",
        "campaign_title": "{name}",
        "campaign_description": "{what}享 {multiplier} 倍积分，截至 {until}",
        "campaign_everything": "全部商品",
        "campaign_reason": "本单没有商品可获得{name}奖励。",
        "campaign_reason_outdone": "本单已适用更高的积分奖励，{name}不再叠加。",
        "nudge_stamps": "再集 {missing} 个印章即可在{program}免费获得一件商品",
        "stamp": "", "stamps": "",
        "nudge_tier": "再消费 {amount} 即可升级为{tier}",
        "nudge_points_expiry": "{points} 积分将于 {date} 到期",
        "nudge_voucher_expiry": "您的优惠券{name}（{code}）将于 {date} 到期",
        "voucher_amount_off": "立减 {amount}",
        "voucher_percent_off": "优惠 {percent}%",
        "voucher_free_item": "免费一件商品",
        "voucher_free_item_up_to": "免费一件商品（最高 {amount}）",
        "voucher_valid_until": "{offer}，有效期至 {date}",
        "voucher_reason_owner": "优惠券 {code} 属于其他会员。",
        "voucher_reason_not_yet": "优惠券 {code} 自 {date} 起可用。",
        "voucher_reason_audience": "优惠券 {code}（{name}）不适用于该会员。",
        "voucher_reason_min_spend": "优惠券 {code} 需消费满 {min_spend}，本单为 {net}。",
        "voucher_reason_no_item": "本单没有适用优惠券 {code}（{name}）的商品。",
    },
}


def message(locale: str, key: str, **values: object) -> str:
    """A message in the member's language (English for a locale or message without a translation)."""
    table = MESSAGES.get(locale, MESSAGES[DEFAULT_LOCALE])
    return render(table.get(key) or MESSAGES[DEFAULT_LOCALE][key], values)


# -- birthday bonus ----------------------------------------------------------------------------------------------


def birthday_bonus_year(birthday: date | None, sale_day: date, points: int, last_year: int | None) -> int | None:
    """The year of the birthday whose week contains ``sale_day`` (in the store's time zone) when its bonus is
    still due, else None: once per year, and never for a year before the last one paid. Only the last year paid
    is kept: a sale entered late (an admin's backdated sale, an import's line re-sent) from an earlier birthday
    week paid that year's bonus, and then the current year's again at the next sale, which found the year paid
    overwritten by the older one."""
    if points <= 0:
        return None
    occurrence = birthday_occurrence(birthday, sale_day)
    if occurrence is None or (last_year is not None and occurrence.year <= last_year):
        return None
    return occurrence.year


def birthday_bonus_year_taken_back(year: int) -> int:
    """The year to keep as the last one paid once the bonus of ``year`` is taken back (its sale voided, or returned
    whole): ``year`` is due again at the next sale in its week, and every year before it stays closed, as it was
    while ``year`` stood. Only the last year paid is kept, so whether the year before was paid is not known;
    forgetting every year (as the void did until 2026-12-07) let a sale entered late from last year's birthday week
    pay last year's bonus a second time."""
    return year - 1


def ordered_moves(moves: Iterable[tuple[str | None, str, int]],
                  order: Sequence[str]) -> list[tuple[str | None, str, int]]:
    """Segment moves ``(from, to, members)`` in the segments' own order (``QUADRANTS`` or ``LIFECYCLES``), the
    members segmented for the first time (``from`` None) first; moves that are no move are left out."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(((f, t, n) for f, t, n in moves if f != t and n > 0),
                  key=lambda m: (-1 if m[0] is None else rank.get(m[0], len(rank)), rank.get(m[1], len(rank))))
