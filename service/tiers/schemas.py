from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class TierHistoryItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from")
    to: str
    at: datetime
    reason: str = Field(description="`qualifying_spend` (upgrade at a commit), `review` (scheduled review) or "
                                    "`reversal` (a void or return took back the upgrade its sale had made)")


class TierPublic(BaseModel):
    code: str
    name: str
    qualifying_spend: int = Field(description="Net spend in the rolling window, minor units.")
    next_tier: str | None
    spend_to_next: int | None
    attained_at: datetime | None
    review_at: datetime | None
    earn_multiplier: float
    discount_percent: float
    perks: list[str]
    history: list[TierHistoryItem]
