"""Events: the transactional outbox, the feed and webhook endpoints. Never commits.

Every domain reports a business event with :func:`emit`, in the database transaction of the change itself: the
event commits with the change or not at all (a change rolled back leaves no event).

**Feed order.** ``GET /v1/events`` reads events by ``position``, a number an event gets only *after* its
transaction committed, so a reader's cursor can never pass an event that is still to commit:

- PostgreSQL: transactions commit in any order, whatever order they inserted their events in (a sequence or an
  identity column would expose "event 12 committed, event 11 not yet", and a reader at 12 would skip 11 for
  ever). :func:`publish_committed` numbers the committed events that have no position yet, in insertion order,
  after every position already given, under a transaction-scoped advisory lock (one numberer at a time, in any
  process). The feed and the webhook worker call it before they read. An event written after another event's
  transaction committed (e.g. the next sale of the same member, which waited for the first one's lock) is always
  numbered after it.
- SQLite: one writer at a time, so :func:`emit` numbers the event as it inserts it (commit order).

The cursor a client holds is the id of the last event it read (``after=evt_…``).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record as audit
from service.clock import Clock
from service.db import Database
from service.errors import ValidationFailed
from service.events import repository, rules
from service.events.errors import (
    DeliveryInFlight,
    DeliveryNotFound,
    InvalidCursor,
    WebhookDisabled,
    WebhookNotFound,
)
from service.events.models import Event, Webhook, WebhookDelivery
from service.events.schemas import (
    DeliveryPublic,
    EventPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookPublic,
)
from service.ids import new_id

NUMBERING_BATCH = 5000


async def emit(session: AsyncSession, type: str, data: dict[str, Any], *, at: datetime,
               member_id: str | None = None) -> str:
    """Write one event into the outbox, in the caller's transaction; returns its id (``evt_…``).

    ``type`` is one of :data:`service.events.rules.EVENT_TYPES` (add new types there); ``data`` is the event's
    JSON object (datetimes and other pydantic-serializable values are converted; keep personal data out: events
    outlive erasure); ``at`` is when the change happened (the service clock's "now", or the business time it
    applies at, e.g. a tier review's due date); ``member_id`` the member concerned, if any. One INSERT."""
    if type not in rules.EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}: add it to service.events.rules.EVENT_TYPES")
    event_id = new_id("evt")
    await repository.add_event(session, {"event_id": event_id, "type": type, "occurred_at": at,
                                         "member_id": member_id, "data": to_jsonable_python(data)})
    return event_id


async def publish_committed(db: Database) -> int:
    """Give feed positions to the events committed since the last call (PostgreSQL; SQLite numbers at insert).
    Runs in a short transaction of its own; returns how many events were numbered."""
    if db.dialect == "sqlite":
        return 0
    total = 0
    while True:
        numbered = await db.run(lambda session: repository.number_committed(session, NUMBERING_BATCH))
        total += numbered
        if numbered < NUMBERING_BATCH:
            return total


def to_public(row: Event) -> EventPublic:
    return EventPublic(id=row.event_id, type=row.type, occurred_at=row.occurred_at, data=row.data)


async def feed(session: AsyncSession, *, after: str | None, types: list[str] | None,
               limit: int) -> list[EventPublic]:
    """Events in feed order after the event ``after`` (an event id), of the types the ``types`` parameter's
    values name (:func:`rules.requested_types`; every type without it). A parameter that names none, such as
    ``types=``, is a 422 rather than a silent "every type"."""
    wanted = rules.requested_types(types)
    position = 0
    if after:
        cursor = await repository.event_by_id(session, after)
        if cursor is None or cursor.position is None:
            raise InvalidCursor(f"There is no event {after!r} in the feed; pass the id of an event it returned.")
        position = cursor.position
    if wanted is not None and not wanted:
        raise ValidationFailed("The types parameter names no event type; leave it out to read every type.",
                               errors=[{"loc": ["query", "types"], "msg": "names no event type"}])
    unknown = sorted(set(wanted or ()) - set(rules.EVENT_TYPES))
    if unknown:
        raise ValidationFailed(f"Unknown event type(s): {', '.join(unknown)}.",
                               errors=[{"loc": ["query", "types"], "msg": f"unknown: {', '.join(unknown)}"}])
    return [to_public(row) for row in await repository.feed(session, after=position, types=wanted, limit=limit)]


def webhook_public(row: Webhook) -> WebhookPublic:
    return WebhookPublic(id=row.id, url=row.url, types=list(row.types), status=row.status,
                         created_at=row.created_at, failing_since=row.failing_since, disabled_at=row.disabled_at,
                         disabled_reason=row.disabled_reason)


async def create_webhook(session: AsyncSession, body: WebhookCreate, clock: Clock, *, actor: str) -> WebhookCreated:
    """A new endpoint receives the events numbered after its creation."""
    now = clock.now()
    secret = body.secret or f"whsec_{secrets.token_urlsafe(32)}"
    row = Webhook(id=new_id("whk"), url=str(body.url), secret=secret, types=sorted(set(body.types)),
                  status="active", cursor=await repository.top_position(session), created_at=now)
    await repository.add_webhook(session, row)
    await audit(session, clock, actor=actor, action="webhook.created", target=row.id,
                data={"url": row.url, "types": row.types})
    return WebhookCreated(**webhook_public(row).model_dump(), secret=secret)


async def _webhook(session: AsyncSession, webhook_id: str, *, lock: bool = False) -> Webhook:
    row = await repository.get_webhook(session, webhook_id, lock=lock)
    if row is None:
        raise WebhookNotFound(f"There is no webhook {webhook_id!r}.")
    return row


async def get_webhook(session: AsyncSession, webhook_id: str) -> WebhookPublic:
    return webhook_public(await _webhook(session, webhook_id))


async def list_webhooks(session: AsyncSession, *, after: str | None, limit: int) -> list[WebhookPublic]:
    return [webhook_public(row) for row in await repository.list_webhooks(session, after=after, limit=limit)]


async def delete_webhook(session: AsyncSession, webhook_id: str, clock: Clock, *, actor: str) -> None:
    """Remove the endpoint and its delivery log; nothing more is sent to it."""
    row = await _webhook(session, webhook_id, lock=True)
    await repository.delete_webhook(session, row.id)
    await audit(session, clock, actor=actor, action="webhook.deleted", target=row.id, data={"url": row.url})


async def enable_webhook(session: AsyncSession, webhook_id: str, clock: Clock, *, actor: str) -> WebhookPublic:
    """Turn a disabled endpoint back on: it resumes where it stopped (events meanwhile are delivered too)."""
    row = await _webhook(session, webhook_id, lock=True)
    if row.status != "active":
        row.status, row.failing_since, row.disabled_at, row.disabled_reason = "active", None, None, None
        await session.flush()
        await audit(session, clock, actor=actor, action="webhook.enabled", target=row.id)
    return webhook_public(row)


def delivery_public(row: WebhookDelivery, *, endpoint_active: bool = True) -> DeliveryPublic:
    """A disabled endpoint's deliveries stay ``pending`` (enabling it resumes them) but no attempt is due: the
    stored time, long past perhaps, is not shown as if it were coming."""
    return DeliveryPublic(
        id=row.id, event_id=row.event_id, event_type=row.event_type, status=row.status, attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == "pending" and endpoint_active else None,
        last_attempt_at=row.last_attempt_at, last_status_code=row.last_status_code, last_error=row.last_error,
        delivered_at=row.delivered_at, created_at=row.created_at)


async def deliveries(session: AsyncSession, webhook_id: str, *, after: str | None,
                     limit: int) -> list[DeliveryPublic]:
    hook = await _webhook(session, webhook_id)
    return [delivery_public(row, endpoint_active=hook.status == "active")
            for row in await repository.deliveries(session, webhook_id, after=after, limit=limit)]


async def redeliver(session: AsyncSession, webhook_id: str, delivery_id: str, clock: Clock, *,
                    actor: str) -> DeliveryPublic:
    """Send the delivery's event again, at once and with a fresh 3-day retry window (whatever its status).

    Not while a worker is sending it (:func:`rules.in_flight`): clearing its claim would let a second worker
    send it alongside the first ("two workers never send one delivery at once"). That is a 409; the attempt
    under way is in the log within seconds, and the operator redelivers then if it is still wanted. (Keeping
    the claim and marking the delivery due again after that attempt would need the request stored with the
    delivery, or the attempt's success would swallow it.)"""
    hook = await _webhook(session, webhook_id, lock=True)
    if hook.status != "active":
        raise WebhookDisabled("This webhook is disabled; enable it first (POST /v1/webhooks/{id}/enable).")
    row = await repository.get_delivery(session, webhook_id, delivery_id, lock=True)
    if row is None:
        raise DeliveryNotFound(f"Webhook {webhook_id!r} has no delivery {delivery_id!r}.")
    now = clock.now()
    if rules.in_flight(row.claim, row.next_attempt_at, now):
        raise DeliveryInFlight(f"Delivery {delivery_id!r} is being sent now; its outcome is in the log once the "
                               "attempt ends (at the latest when its lease does, at "
                               f"{row.next_attempt_at.isoformat()}). Redeliver after that if it is still wanted.")
    row.status, row.attempts, row.window_start, row.next_attempt_at, row.claim = "pending", 0, now, now, None
    await session.flush()
    await audit(session, clock, actor=actor, action="webhook.redelivered", target=row.id)
    return delivery_public(row)
