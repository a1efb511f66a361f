from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.events.rules import EVENT_TYPES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class EventPublic(BaseModel):
    """One business event; a webhook delivery's body is exactly this object."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "evt_4k9x2m7q8r1t5v3w6y0z", "type": "tier.changed", "occurred_at": "2026-11-23T10:15:00Z",
        "data": {"member_id": "mem_8d2f…", "from": "silver", "to": "gold", "reason": "qualifying_spend"}}]})

    id: str = Field(description="`evt_…`; the same event delivered twice carries the same id.")
    type: str = Field(description=f"One of: {', '.join(EVENT_TYPES)}.")
    occurred_at: datetime
    data: dict[str, Any]


class EventList(BaseModel):
    data: list[EventPublic]
    next_cursor: str | None = Field(description="Pass as `after` for the next page (null: no more events now; keep "
                                                "the last event's id to poll for newer ones).")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "https://app-backend.example.com/loyalty/events", "types": ["tier.changed", "reward.issued"]}]})

    url: AnyHttpUrl = Field(description="Where events are POSTed (https in production).")
    secret: Annotated[str, StringConstraints(min_length=16, max_length=255, pattern=r"^[\x21-\x7e]+$")] | None = (
        Field(default=None, description="The signing secret; when omitted the service makes one. Shown once."))
    types: list[EventType] = Field(default_factory=list, max_length=len(EVENT_TYPES),
                                   description="Event types to deliver; empty: all of them.")

    @field_validator("url")
    @classmethod
    def _bounded(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2048:
            raise ValueError("must be at most 2048 characters")
        return value

    @field_validator("url")
    @classmethod
    def _sendable(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        """``AnyHttpUrl`` takes hosts the delivery worker's HTTP client refuses to build a request for (``http://💩.la``
        is kept as ``xn--ls8h.la``, which httpx's IDNA 2008 check rejects): every delivery to it would fail, so the
        endpoint is refused now, with the reason, rather than failing for a day and being disabled."""
        try:
            httpx.Request("POST", str(value))
        except Exception as exc:  # idna, httpx.InvalidURL, ValueError: each means "cannot"
            raise ValueError(f"cannot be sent to ({type(exc).__name__}: {exc})") from None
        return value


class WebhookPublic(BaseModel):
    id: str
    url: str
    types: list[str]
    status: Literal["active", "disabled"]
    created_at: datetime
    failing_since: datetime | None = Field(description="First failure since the last successful delivery.")
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret (shown only in this answer).")


class WebhookList(BaseModel):
    data: list[WebhookPublic]
    next_cursor: str | None


class DeliveryPublic(BaseModel):
    id: str
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: still to be sent, also while the endpoint is disabled (sent once it is enabled "
                    "again); `delivered`: the receiver answered 2xx; `failed`: every attempt failed for 3 days "
                    "(redeliver to retry).")
    attempts: int
    next_attempt_at: datetime | None = Field(
        description="When a pending delivery is tried next; null once it is delivered or failed, and while the "
                    "endpoint is disabled (nothing is tried until it is enabled).")
    last_attempt_at: datetime | None
    last_status_code: int | None = Field(description="The receiver's HTTP status (none: no answer).")
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryList(BaseModel):
    data: list[DeliveryPublic]
    next_cursor: str | None
