from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StringConstraints,
)

from service.clock import written_as_text
from service.text import PRINTABLE

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                        pattern=PRINTABLE)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=32,
                                         pattern=r"^\+?[0-9 ()./-]+$")]
Email = Annotated[EmailStr, StringConstraints(max_length=254)]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")]
ExternalRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                               pattern=PRINTABLE)]
ReferralCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=4, max_length=16,
                                                pattern=r"^[A-Za-z0-9-]+$")]
MemberId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _plausible_birthday(value: date) -> date:
    if value < date(1900, 1, 1):
        raise ValueError("birthday must be on or after 1900-01-01")
    return value


Birthday = Annotated[date, BeforeValidator(written_as_text), AfterValidator(_plausible_birthday)]


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "Jane Doe", "phone": "+1 415 555 2671", "email": "jane@example.com", "birthday": "1990-04-01",
        "locale": "en", "marketing_consent": True}]})

    name: Name
    phone: Phone | None = Field(default=None, description="Normalized to E.164; unique.")
    email: Email | None = Field(default=None, description="Matched case-insensitively; unique.")
    birthday: Birthday | None = None
    locale: Locale | None = Field(default=None, description="`en`, `zh-CN`, …")
    marketing_consent: StrictBool | None = None
    external_ref: ExternalRef | None = Field(default=None, description="The retailer's own id; unique.")
    referral_code: ReferralCode | None = Field(default=None, description="The referring member's code.")


class MemberUpdate(BaseModel):
    """Only the fields sent change; ``null`` clears an optional field."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"email": "jane.doe@example.com", "marketing_consent": False}]})

    name: Name | None = None
    phone: Phone | None = None
    email: Email | None = None
    birthday: Birthday | None = None
    locale: Locale | None = None
    marketing_consent: StrictBool | None = None
    external_ref: ExternalRef | None = None


class MemberPublic(BaseModel):
    id: str
    card_number: str = Field(description="Digits; the last one is a Luhn check digit.")
    name: str | None
    phone: str | None
    email: str | None
    birthday: date | None
    locale: str
    marketing_consent: bool | None
    external_ref: str | None = Field(description="The retailer's own id (its CRM's key for the person); always "
                                                 "null for a till (`pos` key), which sees phone and email masked.")
    status: Literal["active", "erased"]
    enrolled_at: datetime
    tier: str
    referral_code: str
    profile_completeness: int = Field(ge=0, le=100)


class MemberList(BaseModel):
    data: list[MemberPublic]
    next_cursor: str | None
