from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from service.clock import in_utc, written_as_text
from service.money import MAX_AMOUNT, is_currency
from service.personalization.rules import canonical_greetings, locale_clashes
from service.program.rules import tier_ladder_problems
from service.text import Name


def _store_id(value: str) -> str:
    """A store id is a path segment (``/v1/stores/{id}/receipts/…``): ``.`` and ``..`` would name the path's own
    folder or its parent, and no client sends them as an id."""
    if not value.strip("."):
        raise ValueError("a store id cannot be made of dots only")
    return value


StoreId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$"), AfterValidator(_store_id)]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
Multiplier = Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]
MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
def _in_utc_when_aware(value: datetime) -> datetime:
    """Stored and shown in UTC, as every time of the API (a naive time is refused by its model, with its name)."""
    return in_utc(value) if value.tzinfo is not None else value


Time = Annotated[datetime, BeforeValidator(written_as_text), AfterValidator(_in_utc_when_aware)]


def _currency(code: str) -> str:
    if not is_currency(code):
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)") from exc
    if (name not in available_timezones() and name != "UTC") or name in _NOT_A_PLACE:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)")
    return name


# Names the zone database holds that are no place's time: ``localtime`` is the serving machine's own zone (a
# store's dates would change with the machine serving it), ``Factory`` a placeholder.
_NOT_A_PLACE = frozenset({"localtime", "Factory"})


TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_timezone)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BonusEvent(Strict):
    name: Name
    starts_at: Time
    ends_at: Time
    multiplier: Multiplier
    categories: list[Code] | None = Field(default=None, max_length=200)
    segments: list[Code] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _window(self) -> BonusEvent:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a UTC offset")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class EarnRules(Strict):
    base_rate_per_major_unit: float = Field(default=1, ge=0, le=1000, allow_inf_nan=False)
    category_multipliers: dict[Code, Multiplier] = Field(default_factory=dict, max_length=500)
    sku_multipliers: dict[Code, Multiplier] = Field(default_factory=dict, max_length=5000)
    bonus_events: list[BonusEvent] = Field(default_factory=list, max_length=100)


class Tier(Strict):
    code: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")]
    name: Name
    min_qualifying_spend: Amount
    earn_multiplier: Multiplier = 1
    discount_percent: float = Field(default=0, ge=0, le=100, allow_inf_nan=False)
    perks: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=20)


class TopUpBonus(Strict):
    min_amount: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
    bonus: Amount


class Referral(Strict):
    referrer_points: Annotated[int, Field(strict=True, ge=0, le=10**9)] = 0
    referee_points: Annotated[int, Field(strict=True, ge=0, le=10**9)] = 0
    min_first_spend: Amount = 0


class BirthdayBonus(Strict):
    points: Annotated[int, Field(strict=True, ge=0, le=10**9)] = Field(
        default=0, description="Points granted once a year at the member's first purchase in their birthday week "
        "(the birthday ± 3 days); 0: none.")


class SegmentSettings(Strict):
    """Fixed quadrant thresholds; null: the median the sweep computes."""

    min_frequency: Annotated[int, Field(strict=True, ge=1, le=10**6)] | None = Field(
        default=None, description="Purchases in the trailing 365 days from which a member is frequent.")
    min_monetary: Amount | None = Field(
        default=None, description="Net spend in the trailing 365 days from which a member spends high.")


Template = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]


class ProgramConfig(Strict):
    """The program's rules. Money in minor units of ``currency``."""

    currency: Currency
    point_value: Annotated[int, Field(strict=True, ge=1, le=10**6)] = Field(
        default=1, description="Minor units one point is worth when burned.")
    max_burn_percent: Annotated[int, Field(strict=True, ge=0, le=100)] = Field(
        default=100, description="The most of a basket's net that points may pay.")
    earn: EarnRules = Field(default_factory=EarnRules)
    points_expiry_months: Annotated[int, Field(strict=True, ge=1, le=120)] | None = Field(
        default=12, description="Months after earning that a lot of points expires; null: never.")
    tiers: list[Tier] = Field(min_length=1, max_length=20, description="Ascending; the first at 0.")
    tier_window_months: Annotated[int, Field(strict=True, ge=1, le=60)] = 12
    wallet_top_up_bonuses: list[TopUpBonus] = Field(default_factory=list, max_length=50)
    referral: Referral = Field(default_factory=Referral)
    birthday_bonus: BirthdayBonus = Field(default_factory=BirthdayBonus)
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    greetings: dict[Locale, dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")], Template]] = Field(
        default_factory=dict, max_length=50, description="Templates per locale and occasion over the built-in `en` "
        "and `zh-CN`. Locales are case-insensitive and kept in their conventional case (`zh-cn` is `zh-CN`).")

    @field_validator("greetings")
    @classmethod
    def _canonical_locales(cls, greetings: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """Each locale under its one spelling, the built-ins' (a program read as stored is normalised too)."""
        return canonical_greetings(greetings)

    @model_validator(mode="after")
    def _ladder(self) -> ProgramConfig:
        problems = tier_ladder_problems(self.tiers)
        if problems:
            raise ValueError("; ".join(problems))
        mins = [b.min_amount for b in self.wallet_top_up_bonuses]
        if len(set(mins)) != len(mins):
            raise ValueError("wallet_top_up_bonuses must have distinct min_amount values")
        return self

# One program, as an admin would set it up (the example of `PUT /v1/program`; `GET` answers it with `updated_at`).
PROGRAM_EXAMPLE = {
    "currency": "USD", "point_value": 1, "max_burn_percent": 50,
    "earn": {"base_rate_per_major_unit": 1, "category_multipliers": {"coffee": 2}, "sku_multipliers": {},
             "bonus_events": [{"name": "Double points weekend", "starts_at": "2026-12-12T00:00:00Z",
                               "ends_at": "2026-12-14T00:00:00Z", "multiplier": 2, "categories": None,
                               "segments": None}]},
    "points_expiry_months": 12,
    "tiers": [{"code": "member", "name": "Member", "min_qualifying_spend": 0, "earn_multiplier": 1,
               "discount_percent": 0, "perks": []},
              {"code": "gold", "name": "Gold", "min_qualifying_spend": 50000, "earn_multiplier": 1.5,
               "discount_percent": 5, "perks": ["Free delivery"]}],
    "tier_window_months": 12, "wallet_top_up_bonuses": [{"min_amount": 5000, "bonus": 500}],
    "referral": {"referrer_points": 200, "referee_points": 100, "min_first_spend": 2000},
    "birthday_bonus": {"points": 100}, "segments": {"min_frequency": None, "min_monetary": None},
    "greetings": {"en": {"birthday": "Happy birthday, {name}!"}}, "version": 3,
}


class ProgramPublic(ProgramConfig):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True, json_schema_extra={
        "examples": [PROGRAM_EXAMPLE | {"version": 4, "updated_at": "2026-12-01T09:30:00Z"}]})

    version: int
    updated_at: datetime


class ProgramUpdate(ProgramConfig):
    """The whole configuration, with the ``version`` it was read at (a stale version is a 409).
    ``updated_at`` as GET returns it is accepted and ignored."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [PROGRAM_EXAMPLE]})

    version: Annotated[int, Field(strict=True, ge=1, le=MAX_VERSION)]
    updated_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_spelling_per_locale(cls, data: object) -> object:
        """Two spellings of one locale in ``greetings`` (``zh-CN`` and ``zh-cn``) are refused: which templates
        were meant is not for the service to guess."""
        if isinstance(data, dict) and isinstance(data.get("greetings"), dict):
            clashes = locale_clashes(key for key in data["greetings"] if isinstance(key, str))
            if clashes:
                raise ValueError("greetings: " + "; ".join(" and ".join(group) for group in clashes)
                                 + " are one locale (locales are case-insensitive): give its templates once")
        return data


class StoreCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": "berlin-01", "name": "Berlin Mitte", "timezone": "Europe/Berlin"}]})

    id: StoreId | None = Field(default=None, description="The retailer's own store code; generated if left out.")
    name: Name
    timezone: TimeZone = "UTC"


class StorePublic(BaseModel):
    id: str
    name: str
    timezone: str
    created_at: datetime


class StoreList(BaseModel):
    data: list[StorePublic]
    next_cursor: str | None
