from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel

from service.db import UTCDateTime


class Member(SQLModel, table=True):
    __tablename__ = "members"

    id: str = Field(primary_key=True, max_length=32)
    card_number: str = Field(max_length=19, unique=True)
    name: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=20, unique=True)
    email: str | None = Field(default=None, max_length=254)
    email_normalized: str | None = Field(default=None, max_length=254, unique=True)
    birthday: date | None = None
    locale: str | None = Field(default=None, max_length=35)
    marketing_consent: bool | None = None
    external_ref: str | None = Field(default=None, max_length=100, unique=True)
    status: str = Field(default="active", max_length=8)
    tier_code: str | None = Field(default=None, max_length=32)
    referral_code: str = Field(max_length=16, unique=True)
    referred_by: str | None = Field(default=None, max_length=32, foreign_key="members.id")
    enrolled_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # An erased member's external_ref as a digest (members.rules.erased_ref): an import finds it and refuses the
    # line, instead of enrolling the person again from the CRM's file.
    erased_ref: str | None = Field(default=None, max_length=64, index=True)
