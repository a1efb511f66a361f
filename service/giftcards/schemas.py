from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from service.giftcards.rules import MAX_ISSUE, PIN_DIGITS
from service.ids import normalize_code
from service.money import MAX_AMOUNT

# What a cashier types: dashes and spaces are dropped, letters upper-cased.
GiftCardCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 -]+$"),
                         AfterValidator(normalize_code)]
Pin = Annotated[str, StringConstraints(pattern=rf"^[0-9]{{{PIN_DIGITS}}}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GiftCardIssue(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"amount": 5000, "count": 10}]})

    amount: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="Minor units loaded on each card.")]
    count: Annotated[int, Field(strict=True, ge=1, le=MAX_ISSUE, description="How many cards (default 1).")] = 1


class GiftCardIssued(BaseModel):
    id: str
    code: str = Field(description="The card's code (13 symbols without look-alike characters).")
    pin: str = Field(description=f"The card's {PIN_DIGITS}-digit PIN. Shown this once: only its hash is kept.")
    balance: int
    currency: str


class GiftCardPublic(BaseModel):
    id: str
    balance: int
    currency: str
    status: Literal["active", "spent"] = Field(description="`spent` once the balance is 0.")


class GiftCardTender(Strict):
    code: GiftCardCode
    pin: Pin
    amount: Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT, description=(
        "Minor units to take from this card; left out: as much as it holds, up to what is still owed."))] | None = None
