from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

RATE = "None when nothing was there to redeem."


class PointsRedemption(BaseModel):
    issued: int = Field(description="Points the program issued in the period (earned, referral and birthday "
                                    "bonuses), less what returns and voids took back.")
    redeemed: int = Field(description="Points burned at the till in the period, less what voids and returns put "
                                      "back.")
    expired: int = Field(description="Points that expired in the period.")
    adjusted: int = Field(description="Points given (positive) or taken (negative) by manual adjustments.")
    redemption_rate: float | None = Field(description=f"redeemed / issued (the burn rate). {RATE}")
    expiry_rate: float | None = Field(description=f"expired / issued (breakage). {RATE}")


class GiftCardRedemption(BaseModel):
    issued: int = Field(description="Value put on gift cards in the period (minor units).")
    spent: int = Field(description="Value paid with gift cards at the till in the period, less what voids and "
                                   "returns put back on the cards (minor units).")
    redemption_rate: float | None = Field(description=f"spent / issued. {RATE}")


class CohortPublic(BaseModel):
    issued: int = Field(description="Issued in the period.")
    redeemed: int = Field(description="Of those, redeemed.")
    expired: int = Field(description="Of those, past their end unused.")
    open: int = Field(description="Of those, still usable.")
    withdrawn: int = Field(description="Of those, withdrawn before use (a voucher voided, a reward revoked when "
                                       "the sale that earned it was voided or returned).")
    redemption_rate: float | None = Field(description=f"redeemed / (issued - withdrawn). {RATE}")


class CampaignRedemption(CohortPublic):
    campaign_id: str
    name: str


class PunchProgramRedemption(CohortPublic):
    program_id: str
    name: str


class VoucherRedemptions(CohortPublic):
    campaigns: list[CampaignRedemption] = Field(description="Campaigns that issued vouchers in the period, by id.")


class PunchRewardRedemptions(CohortPublic):
    programs: list[PunchProgramRedemption] = Field(
        description="Punch card programmes that issued rewards in the period, by id.")


_COHORT = {"issued": 1200, "redeemed": 420, "expired": 96, "open": 660, "withdrawn": 24, "redemption_rate": 0.3571}


class RedemptionReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "as_of": "2026-12-06T09:30:00Z",
        "points": {"issued": 184200, "redeemed": 61350, "expired": 12800, "adjusted": 1500,
                   "redemption_rate": 0.3331, "expiry_rate": 0.0695},
        "gift_cards": {"issued": 250000, "spent": 173400, "redemption_rate": 0.6936},
        "vouchers": {**_COHORT, "campaigns": [{"campaign_id": "cmp_3kq8v2", "name": "Spend 100, get 5", **_COHORT}]},
        "punch_rewards": {"issued": 310, "redeemed": 255, "expired": 12, "open": 40, "withdrawn": 3,
                          "redemption_rate": 0.8306, "programs": [
                              {"program_id": "pcp_coffee", "name": "Coffee card", "issued": 310, "redeemed": 255,
                               "expired": 12, "open": 40, "withdrawn": 3, "redemption_rate": 0.8306}]},
    }]})

    period_from: datetime | None = Field(serialization_alias="from",
                                         description="Start of the period (inclusive); null: since the beginning.")
    period_to: datetime = Field(serialization_alias="to", description="End of the period (exclusive).")
    as_of: datetime = Field(description="When the counts were taken: vouchers and rewards stand as of then.")
    points: PointsRedemption
    gift_cards: GiftCardRedemption
    vouchers: VoucherRedemptions
    punch_rewards: PunchRewardRedemptions
