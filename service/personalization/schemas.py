"""Greetings, offers, nudges and segments as the till and the app see them.

Offers and nudges are discriminated unions on ``kind``: one model per kind, so generated clients get a typed
variant for each. A domain that brings a new kind (vouchers) adds its model to :data:`Offer` / :data:`Nudge`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Answers always carry every field (null where it does not apply): required in the OpenAPI document, so generated
# clients see ``kind`` as the discriminator it is.
ANSWER = ConfigDict(json_schema_serialization_defaults_required=True)


class Greeting(BaseModel):
    text: str
    locale: str = Field(description="The locale the text is in (`en` when the member's has no templates).")
    occasion: Literal["birthday", "tier_upgrade", "welcome_back", "milestone", "welcome", "regular"]


class _Offer(BaseModel):
    model_config = ANSWER

    kind: str
    title: str
    description: str
    value: int = Field(description="Minor units this offer is worth (in this basket, for the till).")
    applicable: bool
    reason: str | None = Field(default=None, description="Why it does not apply to this basket, in the member's "
                                                         "language.")


class PunchRewardOffer(_Offer):
    kind: Literal["punch_reward"] = "punch_reward"
    id: str = Field(description="The reward (`rwd_…`) to name in `redeem.punch_rewards`.")


class PointsOffer(_Offer):
    kind: Literal["points"] = "points"
    points: int = Field(description="The most points this basket can take.")


class TierDiscountOffer(_Offer):
    kind: Literal["tier_discount"] = "tier_discount"
    id: str = Field(description="The tier code.")


class CampaignOffer(_Offer):
    kind: Literal["campaign"] = "campaign"
    id: str = Field(description="The campaign's name.")
    ends_at: datetime | None = None


class VoucherOffer(_Offer):
    kind: Literal["voucher"] = "voucher"
    id: str = Field(description="The voucher's code, to name in `redeem.vouchers`.")
    expires_at: datetime | None = None


Offer = Annotated[PunchRewardOffer | VoucherOffer | PointsOffer | TierDiscountOffer | CampaignOffer,
                  Field(discriminator="kind")]


class _Nudge(BaseModel):
    model_config = ANSWER

    kind: str
    text: str


class PunchCardNudge(_Nudge):
    kind: Literal["punch_card"] = "punch_card"
    text: str
    program_id: str
    missing: int


class TierNudge(_Nudge):
    kind: Literal["tier"] = "tier"
    text: str
    tier: str
    amount: int = Field(description="Spend still needed, minor units.")


class PointsExpiryNudge(_Nudge):
    kind: Literal["points_expiry"] = "points_expiry"
    text: str
    points: int
    expires_at: datetime


class VoucherExpiryNudge(_Nudge):
    kind: Literal["voucher_expiry"] = "voucher_expiry"
    text: str
    code: str
    expires_at: datetime


Nudge = Annotated[PunchCardNudge | TierNudge | PointsExpiryNudge | VoucherExpiryNudge, Field(discriminator="kind")]


class MemberOffers(BaseModel):
    offers: list[Offer]
    nudges: list[Nudge]


class SegmentPublic(BaseModel):
    model_config = ANSWER

    quadrant: Literal["true_friend", "butterfly", "barnacle", "stranger"]
    lifecycle: Literal["new", "active", "at_risk", "lapsed"]
    recency_days: int | None = Field(description="Days since the last purchase (null: never bought).")
    frequency: int = Field(description="Purchases in the trailing 365 days.")
    monetary: int = Field(description="Net spend in the trailing 365 days, minor units.")
    last_purchase_on: date | None = None


class ThresholdsPublic(BaseModel):
    min_frequency: int = Field(description="Purchases in the window from which a member counts as frequent.")
    min_monetary: int = Field(description="Net spend in the window from which a member counts as high-spending.")
    source: Literal["program", "sweep", "default"]


class SegmentMove(BaseModel):
    from_: str | None = Field(serialization_alias="from",
                              description="Before the last sweep; null: segmented for the first time.")
    to: str = Field(description="As the last sweep left them.")
    members: int


class SegmentMovement(BaseModel):
    since: datetime | None = Field(description="The `as_of` of the sweep before the last (the latest, if members "
                                               "were last segmented at different ones); null: none yet.")
    quadrants: list[SegmentMove] = Field(description="Members whose quadrant changed, per move.")
    lifecycles: list[SegmentMove] = Field(description="Members whose lifecycle changed, per move.")


class SegmentReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "as_of": "2026-12-01T03:00:00Z", "members": 23570,
        "quadrants": {"true_friend": 3150, "butterfly": 970, "barnacle": 420, "stranger": 19030},
        "lifecycles": {"new": 140, "active": 4970, "at_risk": 350, "lapsed": 18110}, "not_segmented": 212,
        "thresholds": {"min_frequency": 3, "min_monetary": 6945, "source": "sweep"},
        "movement": {"since": "2026-11-01T03:00:00Z",
                     "quadrants": [{"from": None, "to": "stranger", "members": 198},
                                   {"from": "true_friend", "to": "butterfly", "members": 64},
                                   {"from": "stranger", "to": "barnacle", "members": 37}],
                     "lifecycles": [{"from": None, "to": "new", "members": 198},
                                    {"from": "new", "to": "active", "members": 121},
                                    {"from": "active", "to": "at_risk", "members": 88},
                                    {"from": "at_risk", "to": "lapsed", "members": 45}]}}]})

    as_of: datetime | None = Field(description="The time the last `loyalty sweep` segmented members at.")
    members: int = Field(description="Active members segmented by that sweep.")
    quadrants: dict[str, int]
    lifecycles: dict[str, int]
    not_segmented: int = Field(description="Active members enrolled since (they join at the next sweep).")
    thresholds: ThresholdsPublic
    movement: SegmentMovement = Field(description="Who moved where between the sweep before and the last, among "
                                                  "the active members the last sweep segmented.")
