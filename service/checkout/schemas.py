from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from service.clock import utc
from service.money import MAX_AMOUNT, MAX_QUANTITY
from service.personalization.schemas import Greeting, Nudge, Offer
from service.program.schemas import StoreId

Text64 = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
Price = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
MAX_LINES = 500
EARLIEST_YEAR = 1970


def _plausible_time(value: datetime) -> datetime:
    try:
        value = utc(value)
    except OverflowError as exc:
        raise ValueError("must be a time after 1970") from exc
    if value.year < EARLIEST_YEAR:
        raise ValueError("must be a time after 1970")
    return value


SaleTime = Annotated[AwareDatetime, AfterValidator(_plausible_time)]
MAX_POINTS = 10**12


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberRef(Strict):
    """Exactly one of the three."""

    member_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    card_number: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    phone: Annotated[str, StringConstraints(min_length=3, max_length=32)] | None = None

    @model_validator(mode="after")
    def _one(self) -> MemberRef:
        given = [v for v in (self.member_id, self.card_number, self.phone) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of member_id, card_number or phone")
        return self


class CheckoutLine(Strict):
    line_id: Text64
    sku: Text64
    category: Text64
    quantity: Quantity
    unit_price: Price = Field(description="Minor units, before any loyalty discount.")

    @model_validator(mode="after")
    def _total(self) -> CheckoutLine:
        if self.quantity * self.unit_price > MAX_AMOUNT:
            raise ValueError(f"quantity * unit_price must not exceed {MAX_AMOUNT}")
        return self


class Redeem(Strict):
    points: Annotated[int, Field(strict=True, ge=0, le=MAX_POINTS)] = 0
    wallet_amount: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT, description=(
        "Minor units paid from the member's wallet after every discount (at most `payable`)."))] = 0
    punch_rewards: list[Text64] = Field(default_factory=list, max_length=50,
                                        description="Punch-card rewards (`rwd_…`) to use: each makes the cheapest "
                                                    "eligible unit free, up to the reward's cap.")

    @model_validator(mode="after")
    def _unique_rewards(self) -> Redeem:
        if len(set(self.punch_rewards)) != len(self.punch_rewards):
            raise ValueError("each punch reward can be named once")
        return self


class CheckoutRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "member": {"card_number": "8000000000000001"}, "store_id": "berlin-01", "currency": "USD",
        "lines": [{"line_id": "1", "sku": "COFFEE-250", "category": "coffee", "quantity": 2, "unit_price": 450}],
        "redeem": {"points": 100}}]})

    member: MemberRef
    store_id: StoreId
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    lines: list[CheckoutLine] = Field(min_length=1, max_length=MAX_LINES)
    redeem: Redeem | None = None

    @model_validator(mode="after")
    def _lines(self) -> CheckoutRequest:
        ids = [line.line_id for line in self.lines]
        if len(set(ids)) != len(ids):
            raise ValueError("line_id values must be unique within the basket")
        if sum(line.quantity * line.unit_price for line in self.lines) > MAX_AMOUNT:
            raise ValueError(f"the basket's subtotal must not exceed {MAX_AMOUNT}")
        return self


class CommitRequest(CheckoutRequest):
    receipt_id: Text64 = Field(description="The till's receipt number; unique per store.")
    occurred_at: SaleTime | None = Field(
        default=None, description="When the sale happened (default: now). pos: at most 72 h back; never more than "
        "5 minutes ahead.")


class ReturnLine(Strict):
    line_id: Text64
    quantity: Quantity


class ReturnRequest(Strict):
    lines: list[ReturnLine] = Field(min_length=1, max_length=MAX_LINES)

    @model_validator(mode="after")
    def _unique(self) -> ReturnRequest:
        ids = [line.line_id for line in self.lines]
        if len(set(ids)) != len(ids):
            raise ValueError("line_id values must be unique within a return")
        return self


class QuoteMember(BaseModel):
    id: str
    name: str | None
    tier: str
    card_number: str


class AppliedPublic(BaseModel):
    kind: str
    id: str | None = None
    line_id: str | None = None
    amount: int
    points: int | None = Field(default=None, description="For `points`: how many points were burned.")


class LineResult(BaseModel):
    line_id: str
    discount: int
    net: int


class Totals(BaseModel):
    subtotal: int
    discount: int
    net: int
    wallet: int
    gift_cards: int
    payable: int


class StampsEarned(BaseModel):
    program_id: str
    stamps: int


class Earn(BaseModel):
    points: int
    stamps: list[StampsEarned]
    qualifying_spend: int


class Balances(BaseModel):
    points: int
    wallet: int


class Quote(BaseModel):
    member: QuoteMember
    greeting: Greeting
    offers: list[Offer]
    nudges: list[Nudge]
    applied: list[AppliedPublic]
    lines: list[LineResult]
    totals: Totals
    earn: Earn
    balances: Balances


class Earned(BaseModel):
    points: int
    stamps: list[StampsEarned]
    vouchers_issued: list[dict]
    rewards_issued: list[dict]


class TierChange(BaseModel):
    from_: str | None = Field(alias="from")
    to: str


class TransactionPublic(BaseModel):
    id: str
    receipt_id: str
    store_id: str
    member_id: str
    status: Literal["committed", "voided", "partially_returned", "returned"]
    occurred_at: datetime
    applied: list[AppliedPublic]
    lines: list[LineResult]
    totals: Totals
    earned: Earned
    balances_after: Balances
    tier_change: TierChange | None = None


class Reversed(BaseModel):
    points: int = Field(description="Earned points clawed back.")
    points_refunded: int = Field(description="Burned points given back to the member.")
    stamps: list[StampsEarned]
    wallet: int
    qualifying_spend: int


class ReturnPublic(BaseModel):
    id: str
    transaction_id: str
    reversed: Reversed
