from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEntryPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "1042", "at": "2026-12-06T09:30:00Z", "actor": "key_3kq8v2m1", "action": "voucher_campaign.updated",
        "target": "cmp_7hq2x9", "data": {"name": "Spend 100, get 5", "active": False}}]})

    id: str = Field(description="Opaque; also the cursor of the page that ends with this entry.")
    at: datetime
    actor: str | None = Field(description="The id of the API key that made the change (`GET /v1/api-keys`); null: "
                                          "the `loyalty` command line.")
    action: str = Field(description="What was done: `program.updated`, `store.created`, `api_key.created`, "
                                    "`api_key.revoked`, `voucher_campaign.created`, `voucher_campaign.updated`, "
                                    "`vouchers.issued`, `punch_program.created`, `punch_program.updated`, "
                                    "`points.adjusted`, `gift_cards.issued`, `member.erased`, `webhook.created`, "
                                    "`webhook.deleted`, `webhook.enabled`, `webhook.redelivered`.")
    target: str | None = Field(description="The id of what was changed (the program's new version for "
                                           "`program.updated`).")
    data: dict[str, Any] | None = Field(description="What the change set, where it says more than its target; "
                                                    "never a secret or a member's personal data.")


class AuditPage(BaseModel):
    data: list[AuditEntryPublic]
    next_cursor: str | None
