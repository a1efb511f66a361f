from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from service.clock import in_utc, written_as_text
from service.giftcards.schemas import GiftCardTender
from service.ids import normalize_code
from service.money import MAX_AMOUNT, MAX_QUANTITY
from service.personalization.schemas import Greeting, Nudge, Offer
from service.program.schemas import StoreId
from service.text import Text64
from service.vouchers.schemas import VoucherPublic

Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
Price = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
MAX_LINES = 500
EARLIEST_YEAR = 1970


def _plausible_time(value: datetime) -> datetime:
    value = in_utc(value)
    if value.year < EARLIEST_YEAR:
        raise ValueError("must be a time after 1970")
    return value


SaleTime = Annotated[AwareDatetime, BeforeValidator(written_as_text), AfterValidator(_plausible_time)]
MAX_POINTS = 10**12
MAX_GIFT_CARDS = 10


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
    vouchers: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20, description="Voucher codes to redeem, applied in this order (at most "
                                                         "one non-stackable voucher).")
    gift_cards: list[GiftCardTender] = Field(default_factory=list, max_length=MAX_GIFT_CARDS, description=(
        "Gift cards handed over, paying after the wallet in this order (each at most what is still owed)."))

    @model_validator(mode="after")
    def _unique_rewards(self) -> Redeem:
        if len(set(self.punch_rewards)) != len(self.punch_rewards):
            raise ValueError("each punch reward can be named once")
        codes = [card.code for card in self.gift_cards]
        if len(set(codes)) != len(codes):
            raise ValueError("each gift card can be named once")
        codes = [normalize_code(code) for code in self.vouchers]
        if len(set(codes)) != len(codes):
            raise ValueError("each voucher code can be named once")
        if not all(codes):
            raise ValueError("a voucher code cannot be empty")
        return self


class CheckoutRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "member": {"card_number": "8000000000000003"}, "store_id": "berlin-01", "currency": "USD",
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
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "member": {"card_number": "8000000000000003"}, "store_id": "berlin-01", "currency": "USD",
        "lines": [{"line_id": "1", "sku": "COFFEE-250", "category": "coffee", "quantity": 2, "unit_price": 450},
                  {"line_id": "2", "sku": "MUG-01", "category": "homeware", "quantity": 1, "unit_price": 1200}],
        "redeem": {"points": 100, "wallet_amount": 500}, "receipt_id": "R-2026-000123",
        "occurred_at": "2026-11-23T10:15:00Z"}]})

    receipt_id: Text64 = Field(description="The till's receipt number; unique per store.")
    occurred_at: SaleTime | None = Field(
        default=None, description="When the sale happened (default: now). pos: at most 72 h back; never more than "
        "5 minutes ahead.")


class ReturnLine(Strict):
    line_id: Text64
    quantity: Quantity


class ReturnRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "lines": [{"line_id": "2", "quantity": 1}], "receipt_id": "RET-20261207-0007"}]})

    lines: list[ReturnLine] = Field(min_length=1, max_length=MAX_LINES)
    receipt_id: Text64 | None = Field(default=None, description=(
        "The till's number of the return slip. Optional; when given, a second return with the same number for "
        "this sale is refused with 409 `duplicate_return` (naming the first in `return_id`), so a till that lost "
        "both the answer and its idempotency key cannot return the same goods twice."))

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


# What the service answers has every field, null where it does not apply: required in the OpenAPI document (so that
# generated clients read `tier_change: null` as the null it is, not as a field that may be missing).
ANSWER = ConfigDict(json_schema_serialization_defaults_required=True)


# Every kind answers the same keys (`kind, id, line_id, amount, points`, null where they do not apply), as before
# the union: each variant only says which of them its kind fills.
class AppliedPunchReward(BaseModel):
    """A punch-card reward made a unit of a line free."""

    model_config = ANSWER

    kind: Literal["punch_reward"]
    id: str = Field(description="The reward (`rwd_…`).")
    line_id: str
    amount: int = Field(description="Discount on the line, minor units.")
    points: None = None


class AppliedTierDiscount(BaseModel):
    """The member's tier discount on one line."""

    model_config = ANSWER

    kind: Literal["tier_discount"]
    id: str = Field(description="The tier's code.")
    line_id: str
    amount: int = Field(description="Discount on the line, minor units.")
    points: None = None


class AppliedVoucher(BaseModel):
    """A voucher's discount on one line (a voucher spread over several lines appears once per line)."""

    model_config = ANSWER

    kind: Literal["voucher"]
    id: str = Field(description="The voucher (`vch_…`).")
    line_id: str
    amount: int = Field(description="Discount on the line, minor units.")
    points: None = None


class AppliedPoints(BaseModel):
    """Points burned as a discount on the basket."""

    model_config = ANSWER

    kind: Literal["points"]
    id: None = None
    line_id: None = None
    amount: int = Field(description="Discount, minor units.")
    points: int = Field(description="How many points were burned.")


class AppliedWallet(BaseModel):
    """The member's wallet as a tender: lowers `payable`, not the price."""

    model_config = ANSWER

    kind: Literal["wallet"]
    id: None = None
    line_id: None = None
    amount: int = Field(description="Paid from the wallet, minor units.")
    points: None = None


class AppliedGiftCard(BaseModel):
    """A gift card as a tender (after the wallet): lowers `payable`, not the price."""

    model_config = ANSWER

    kind: Literal["gift_card"]
    id: str = Field(description="The card (`gft_…`), never its code.")
    line_id: None = None
    amount: int = Field(description="Paid from the card, minor units.")
    points: None = None


# What the checkout applied, one item per effect; `kind` says which (a discriminated union for generated clients).
AppliedPublic = Annotated[AppliedPunchReward | AppliedTierDiscount | AppliedVoucher | AppliedPoints | AppliedWallet
                          | AppliedGiftCard, Field(discriminator="kind")]
APPLIED = TypeAdapter(AppliedPublic)


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
    points: int = Field(description="What the basket's lines earn (the figure a return of them takes back from).")
    bonus_points: int = Field(description=(
        "Points the sale would credit beyond its lines': the birthday bonus, when this sale would be the member's "
        "first in their birthday week this year. Not a referred member's first-purchase points, which the commit "
        "decides (the receipt's `earned.bonus_points` has them). The sale credits `points + bonus_points`."))
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


class RewardIssued(BaseModel):
    id: str = Field(description="The reward (`rwd_…`), to name in `redeem.punch_rewards` of a later sale.")
    program_id: str
    expires_at: datetime


class Earned(BaseModel):
    points: int = Field(description="What the sale's lines earned (the figure returns of them take back from).")
    bonus_points: int = Field(description=(
        "Points the sale credited beyond its lines': a birthday bonus, a referred member's first-purchase "
        "points. The sale credited `points + bonus_points`; a void, or the return of its last unit, takes them "
        "back."))
    stamps: list[StampsEarned]
    vouchers_issued: list[VoucherPublic] = Field(description=(
        "Vouchers the sale earned by its spend (\"spend 100, get 5\"), as `GET /v1/members/{id}/vouchers` lists them."))
    rewards_issued: list[RewardIssued] = Field(description="Punch card rewards the sale's stamps completed.")


class TierChange(BaseModel):
    from_: str | None = Field(alias="from")
    to: str


class TransactionPublic(BaseModel):
    model_config = ANSWER

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


class TransactionSummary(BaseModel):
    """One sale in a member's history: what the receipt says, without its lines."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "txn_9w2k4m7q1xz8", "receipt_id": "R-20261206-0042", "store_id": "berlin-mitte", "status": "committed",
        "occurred_at": "2026-12-06T09:41:12Z", "currency": "EUR", "subtotal": 1850, "discount": 200, "net": 1650,
        "points_earned": 16, "points_burned": 200}]})

    id: str
    receipt_id: str
    store_id: str
    status: Literal["committed", "voided", "partially_returned", "returned"]
    occurred_at: datetime
    currency: str
    subtotal: int
    discount: int = Field(description="What loyalty took off (rewards, tier, vouchers, points).")
    net: int
    points_earned: int = Field(description="As committed; a later return or void takes back from the balance, "
                                           "not from this figure.")
    points_burned: int


class TransactionSummaryPage(BaseModel):
    data: list[TransactionSummary]
    next_cursor: str | None


class Reversed(BaseModel):
    model_config = ANSWER

    points: int = Field(description="Earned points clawed back.")
    points_refunded: int = Field(description="Burned points given back to the member.")
    stamps: list[StampsEarned]
    wallet: int
    gift_cards: int = Field(description="Given back to the gift cards the sale was paid with.")
    qualifying_spend: int
    vouchers: list[str] = Field(default_factory=list, description=(
        "Codes of unused vouchers the sale earned by its spend (\"spend 100, get 5\") that this return "
        "withdrew: the sale's spend no longer reaches their threshold."))


class ReturnPublic(BaseModel):
    id: str
    transaction_id: str
    receipt_id: str | None = Field(description="The return slip's number, when the till gave one.")
    reversed: Reversed
