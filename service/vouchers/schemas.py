from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from service.clock import RequestTime
from service.money import MAX_AMOUNT
from service.text import Name, Text64

Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
TierCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")]
Time = RequestTime
Quadrant = Literal["true_friend", "butterfly", "barnacle", "stranger"]
Lifecycle = Literal["new", "active", "at_risk", "lapsed"]
MAX_BULK = 10_000
MAX_VOUCHERS_PER_SALE = 20


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Audience(Strict):
    tiers: list[TierCode] | None = Field(default=None, max_length=50)
    quadrants: list[Quadrant] | None = Field(default=None, max_length=4)
    lifecycles: list[Lifecycle] | None = Field(default=None, max_length=4)


class AutoIssue(Strict):
    spend_threshold: Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT)] = Field(
        description="A sale whose net spend reaches this (minor units) issues one voucher to its member.")


class CampaignCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "Spend 100, get 5", "kind": "amount_off", "value": 500, "min_spend": 2000, "valid_days": 30,
        "per_member_limit": 3, "stackable": False, "auto_issue": {"spend_threshold": 10000}}]})

    name: Name
    kind: Literal["amount_off", "percent_off", "free_item"]
    value: Amount | None = Field(default=None, description=(
        "`amount_off`: minor units off; `percent_off`: percent (1-100) of the eligible lines' net; `free_item`: "
        "the most the free unit takes off in minor units (none: the whole unit)."))
    min_spend: Amount = Field(default=0, description="The basket's net (after punch-card rewards and the tier "
                                                     "discount) must reach this.")
    skus: list[Text64] = Field(default_factory=list, max_length=500)
    categories: list[Text64] = Field(default_factory=list, max_length=500,
                                     description="With `skus`: the eligible lines (none named: every line).")
    valid_from: Time | None = None
    valid_until: Time | None = None
    valid_days: Annotated[int, Field(strict=True, ge=1, le=3650)] | None = Field(
        default=None, description="Each voucher is valid this many days from its issue, or from `valid_from` "
                                  "when issued before it (and never past `valid_until`).")
    per_member_limit: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] | None = None
    total_limit: Annotated[int, Field(strict=True, ge=1, le=10**12)] | None = None
    stackable: StrictBool = False
    audience: Audience | None = None
    auto_issue: AutoIssue | None = None
    active: StrictBool = True

    @model_validator(mode="after")
    def _consistent(self) -> CampaignCreate:
        if self.kind == "amount_off" and not self.value:
            raise ValueError("an amount_off campaign needs a value of at least 1 (minor units)")
        if self.kind == "percent_off" and not (self.value and 1 <= self.value <= 100):
            raise ValueError("a percent_off campaign needs a value between 1 and 100 (percent)")
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class CampaignPublic(CampaignCreate):
    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True, json_schema_extra={
        "examples": [{"id": "cmp_7hq2x9m4k8r1t5v3w6y0", "name": "Spend 100, get 5", "kind": "amount_off", "value": 500,
        "min_spend": 2000, "skus": [], "categories": [], "valid_from": None, "valid_until": None, "valid_days": 30,
        "per_member_limit": 3, "total_limit": None, "stackable": False, "audience": None,
        "auto_issue": {"spend_threshold": 10000}, "active": True, "issued_count": 412}]})

    id: str
    issued_count: int = Field(description="Vouchers issued so far (revoked ones are given back).")


class CampaignList(BaseModel):
    data: list[CampaignPublic]
    next_cursor: str | None


class IssueRequest(Strict):
    """Either one voucher for a member, or ``count`` bearer codes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"member_id": "mem_…"}, {"count": 500}]})

    member_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    count: Annotated[int, Field(strict=True, ge=1, le=MAX_BULK)] | None = None

    @model_validator(mode="after")
    def _one(self) -> IssueRequest:
        if (self.member_id is None) == (self.count is None):
            raise ValueError("give either member_id (one voucher for that member) or count (bearer codes)")
        return self


class VoucherPublic(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # every field in every answer

    id: str
    code: str
    campaign_id: str
    member_id: str | None
    status: Literal["active", "redeemed", "expired", "void"]
    valid_from: datetime | None = None
    valid_until: datetime | None
    issued_at: datetime


class VoucherDetail(VoucherPublic):
    title: str = Field(description="The campaign's name.")
    description: str = Field(description="What it takes off, e.g. `5.00 USD off`.")
    min_spend: int
    stackable: bool


class VoucherList(BaseModel):
    data: list[VoucherPublic]
    next_cursor: str | None
