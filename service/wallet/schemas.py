from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.money import MAX_AMOUNT


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WalletPublic(BaseModel):
    cash: int = Field(description="Paid in by the member (minor units).")
    bonus: int = Field(description="Granted by top-up bonus rules (minor units).")
    total: int
    currency: str


class TopUpCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"amount": 5000, "payment_ref": "terminal-7/auth-0815"}]})

    amount: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="Minor units paid in.")]
    payment_ref: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] = Field(
        description="The payment's reference at the till or the payment provider.")


class TopUpPublic(BaseModel):
    cash: int
    bonus: int
    total: int
    bonus_granted: int


class CashOutPublic(BaseModel):
    cash_paid: int = Field(description="Cash part paid back to the member.")
    bonus_forfeited: int = Field(description="Bonus part given up.")
    cash: int
    bonus: int
    total: int


class LiabilityPublic(BaseModel):
    points_outstanding: int = Field(description="Points held by members (debts from returns are not netted).")
    points_value: int = Field(description="`points_outstanding` at `point_value`, in minor units.")
    wallet_cash: int
    wallet_bonus: int
    gift_cards: int = Field(description="What the gift cards still hold.")
    gift_cards_count: int = Field(description="How many gift cards still hold money.")
