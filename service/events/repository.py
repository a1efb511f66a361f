"""Every query of the events domain: the outbox, the feed's positions, webhooks and their deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import defer, defer_row, dialect_of, prebuilt
from service.events.models import Event, Webhook, WebhookDelivery

# pg_advisory_xact_lock key of the feed's numbering (one numberer at a time, across every process).
POSITION_LOCK = 0x6C6F79616C7479  # "loyalty"


# SQLite has one writer at a time: numbering at insert is numbering in commit order.
_ADD_NUMBERED_EVENT = prebuilt(lambda insert: insert(Event.__table__).values(
    position=select(func.coalesce(func.max(Event.position), 0) + 1).scalar_subquery()))


async def add_event(session: AsyncSession, values: dict[str, Any]) -> None:
    """One new row (``values`` are the columns' values). On PostgreSQL deferred, to go out with the session's next
    statement, and with the other events waiting there as one INSERT, in the order they were emitted
    (``db.defer_row``); on SQLite numbered as it is inserted."""
    if dialect_of(session) == "sqlite":
        await defer(session, _ADD_NUMBERED_EVENT(session), values)
    else:
        await defer_row(session, Event.__table__, values)


async def number_committed(session: AsyncSession, limit: int) -> int:
    """PostgreSQL: give feed positions to committed events that have none, in insertion order, after every
    position given so far. Only one transaction numbers at a time (advisory lock, held to commit); a caller that
    finds it taken returns 0 (the holder is numbering the same events). Returns how many were numbered."""
    got = (await session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": POSITION_LOCK})).scalar()
    if not got:
        return 0
    result = await session.execute(text(
        "WITH todo AS (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM events WHERE position IS NULL "
        "ORDER BY seq LIMIT :limit), "
        "base AS (SELECT COALESCE(MAX(position), 0) AS top FROM events) "
        "UPDATE events SET position = base.top + todo.n FROM todo, base WHERE events.seq = todo.seq"),
        {"limit": limit})
    return result.rowcount or 0


async def event_by_id(session: AsyncSession, event_id: str) -> Event | None:
    return (await session.execute(select(Event).where(Event.event_id == event_id))).scalar_one_or_none()


async def events_by_ids(session: AsyncSession, event_ids: Sequence[str]) -> dict[str, Event]:
    if not event_ids:
        return {}
    rows = (await session.execute(select(Event).where(Event.event_id.in_(event_ids)))).scalars()
    return {row.event_id: row for row in rows}


async def feed(session: AsyncSession, *, after: int, types: Sequence[str] | None, limit: int) -> list[Event]:
    query = select(Event).where(Event.position > after).order_by(Event.position).limit(limit)
    if types:
        query = query.where(Event.type.in_(types))
    return list((await session.execute(query)).scalars())


async def top_position(session: AsyncSession) -> int:
    return int((await session.execute(select(func.coalesce(func.max(Event.position), 0)))).scalar_one())


async def add_webhook(session: AsyncSession, row: Webhook) -> None:
    session.add(row)
    await session.flush()


async def get_webhook(session: AsyncSession, webhook_id: str, *, lock: bool = False) -> Webhook | None:
    query = select(Webhook).where(Webhook.id == webhook_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def list_webhooks(session: AsyncSession, *, after: str | None, limit: int) -> list[Webhook]:
    query = select(Webhook).order_by(Webhook.id).limit(limit)
    if after:
        query = query.where(Webhook.id > after)
    return list((await session.execute(query)).scalars())


async def list_webhooks_by_id(session: AsyncSession, webhook_ids: Sequence[str]) -> list[Webhook]:
    return list((await session.execute(select(Webhook).where(Webhook.id.in_(sorted(set(webhook_ids))))))
                .scalars())


async def delete_webhook(session: AsyncSession, webhook_id: str) -> None:
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
    await session.execute(delete(Webhook).where(Webhook.id == webhook_id))


async def lock_active_webhooks(session: AsyncSession) -> list[Webhook]:
    """Active endpoints, each locked; one another worker holds is skipped (it is fanning out to it)."""
    query = (select(Webhook).where(Webhook.status == "active").order_by(Webhook.id)
             .with_for_update(skip_locked=True))
    return list((await session.execute(query)).scalars())


async def lock_webhooks(session: AsyncSession, webhook_ids: Sequence[str]) -> dict[str, Webhook]:
    query = select(Webhook).where(Webhook.id.in_(sorted(set(webhook_ids)))).order_by(Webhook.id).with_for_update()
    return {row.id: row for row in (await session.execute(query)).scalars()}


async def add_deliveries(session: AsyncSession, rows: list[WebhookDelivery]) -> None:
    session.add_all(rows)
    await session.flush()


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[WebhookDelivery]:
    """Due deliveries of active endpoints, locked; rows another worker holds are skipped (``SKIP LOCKED`` on
    PostgreSQL; SQLite has a single writer, so the claim itself is serialized)."""
    query = (select(WebhookDelivery).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
             .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                    Webhook.status == "active")
             .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)
             .with_for_update(skip_locked=True, of=WebhookDelivery))
    return list((await session.execute(query)).scalars())


async def claimed(session: AsyncSession, delivery_ids: Sequence[str], claim: str) -> list[WebhookDelivery]:
    """The deliveries still held by this claim (one whose lease ran out and was taken over is not)."""
    query = (select(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.claim == claim)
             .order_by(WebhookDelivery.id).with_for_update())
    return list((await session.execute(query)).scalars())


async def get_delivery(session: AsyncSession, webhook_id: str, delivery_id: str, *,
                       lock: bool = False) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                          WebhookDelivery.webhook_id == webhook_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def deliveries(session: AsyncSession, webhook_id: str, *, after: str | None,
                     limit: int) -> list[WebhookDelivery]:
    """Newest first (by creation, then id); ``after`` is the id of the last delivery of the previous page."""
    query = (select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
             .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit))
    if after:
        last = await session.get(WebhookDelivery, after)
        if last is not None:
            query = query.where(
                (WebhookDelivery.created_at < last.created_at)
                | ((WebhookDelivery.created_at == last.created_at) & (WebhookDelivery.id < last.id)))
    return list((await session.execute(query)).scalars())
