"""Event tables: the transactional outbox, webhook endpoints and their deliveries. Only
:mod:`service.events.service` and :mod:`service.events.delivery` write them.

- ``events``: one row per business event, inserted by :func:`service.events.service.emit` in the same database
  transaction as the change it reports (a change that rolls back leaves no event). ``seq`` is the insertion
  order; ``position`` is the feed order, given once the event's transaction has committed (see the service's
  docstring): ``GET /v1/events`` and webhook fan-out read ``position`` only.
- ``webhooks``: endpoints (admin). ``cursor`` is the last feed position fanned out to the endpoint's deliveries;
  ``failing_since`` is the first failure since the last success (a day of it disables the endpoint).
- ``webhook_deliveries``: one per (endpoint, event): attempts, the next one's time, the last result. A worker
  claims a due delivery by moving ``next_attempt_at`` a lease ahead and stamping ``claim``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime
from service.ledger.models import BigId

WEBHOOK_STATUSES = ("active", "disabled")
DELIVERY_STATUSES = ("pending", "delivered", "failed")


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_events_event_id"),
        UniqueConstraint("position", name="uq_events_position"),
        Index("ix_events_unpositioned", "seq", postgresql_where="position IS NULL", sqlite_where="position IS NULL"),
    )

    seq: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    event_id: str = Field(max_length=32)
    position: int | None = Field(default=None, sa_type=BigInteger)
    type: str = Field(max_length=64)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    member_id: str | None = Field(default=None, max_length=32)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class Webhook(SQLModel, table=True):
    __tablename__ = "webhooks"
    __table_args__ = (CheckConstraint("status IN ('active', 'disabled')", name="ck_webhooks_status"),)

    id: str = Field(primary_key=True, max_length=32)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=255)
    types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    cursor: int = Field(sa_type=BigInteger)
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    disabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    disabled_reason: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(sa_type=UTCDateTime)


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_status"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_id_created_at", "webhook_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    webhook_id: str = Field(max_length=32, foreign_key="webhooks.id")
    event_id: str = Field(max_length=32)
    event_type: str = Field(max_length=64)
    status: str = Field(max_length=16)
    attempts: int = Field(default=0)
    window_start: datetime = Field(sa_type=UTCDateTime)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claim: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_type=UTCDateTime)
