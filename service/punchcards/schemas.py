from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from service.money import MAX_AMOUNT
from service.text import Name, Text64


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Qualifying(Strict):
    skus: list[Text64] = Field(default_factory=list, max_length=500)
    categories: list[Text64] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _some(self) -> Qualifying:
        if not self.skus and not self.categories:
            raise ValueError("name at least one qualifying SKU or category")
        return self


class Reward(Strict):
    skus: list[Text64] = Field(default_factory=list, max_length=500,
                               description="Items the reward makes free (none: the qualifying items).")
    categories: list[Text64] = Field(default_factory=list, max_length=500)
    max_value: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] | None = Field(
        default=None, description="The most the reward takes off, in minor units (none: the whole unit).")


class PunchProgramCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 10,
        "reward": {"categories": ["coffee"], "max_value": 500}, "reward_valid_days": 90, "active": True}]})

    name: Name
    qualifying: Qualifying
    stamps_required: Annotated[int, Field(strict=True, ge=1, le=1000)]
    reward: Reward = Field(default_factory=Reward)
    reward_valid_days: Annotated[int, Field(strict=True, ge=1, le=3650)]
    active: StrictBool = True


class PunchProgramPublic(PunchProgramCreate):
    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True, json_schema_extra={
        "examples": [{"id": "pcp_4k9x2m7q8r1t5v3w6y0z", "name": "Coffee card",
        "qualifying": {"skus": [], "categories": ["coffee"]}, "stamps_required": 10,
        "reward": {"skus": [], "categories": ["coffee"], "max_value": 500}, "reward_valid_days": 90, "active": True}]})

    id: str


class PunchProgramList(BaseModel):
    data: list[PunchProgramPublic]
    next_cursor: str | None


class RewardPublic(BaseModel):
    id: str
    status: Literal["available", "redeemed", "expired", "revoked"]
    expires_at: datetime


class PunchCardPublic(BaseModel):
    program_id: str
    name: str
    stamps: int = Field(description="Below zero: a deficit from a return, filled by the next stamps.")
    stamps_required: int
    rewards_waiting: int = Field(description=(
        "Rewards the stamps on the card already make but no sale has issued: the next sale that stamps this card "
        "issues them (the programme's `stamps_required` was lowered below what the member holds, or a sale reached "
        "its 50 rewards). Rewards are issued by sales, never by editing a programme."))
    rewards: list[RewardPublic]


class PunchCardList(BaseModel):
    data: list[PunchCardPublic]
    next_cursor: str | None
