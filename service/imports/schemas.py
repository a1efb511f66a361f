"""One line of an import file: a member and their purchase history (JSON Lines, one member per line).

    {"external_ref": "crm-1001", "name": "Jane Doe", "email": "jane@example.com",
     "purchases": [{"store_id": "berlin-01", "receipt_id": "R-1998-0001", "occurred_at": "1998-01-02T12:00:00Z",
                    "lines": [{"line_id": "1", "sku": "CD", "category": "music", "quantity": 2,
                               "unit_price": 1199}]}]}

The member's fields are those of ``POST /v1/members``, with ``external_ref`` required: it is how a second run
finds the member again. Each purchase is a sale as a till commits it, minus the member and any redemption (a
history brings what was bought, not how it was paid).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from service.checkout.schemas import MAX_LINES, CheckoutLine, SaleTime, Strict
from service.members.schemas import ExternalRef, MemberCreate
from service.program.schemas import StoreId
from service.text import Text64

MAX_PURCHASES = 100_000


class ImportPurchase(Strict):
    store_id: StoreId
    receipt_id: Text64 = Field(description="Unique per store; a purchase whose receipt the store has is skipped.")
    occurred_at: SaleTime = Field(description="When the sale happened; in the past.")
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = Field(
        default=None, description="Default: the program's currency.")
    lines: list[CheckoutLine] = Field(min_length=1, max_length=MAX_LINES)


class ImportMember(MemberCreate):
    external_ref: ExternalRef
    purchases: list[ImportPurchase] = Field(default_factory=list, max_length=MAX_PURCHASES)
