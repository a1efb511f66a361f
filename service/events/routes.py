from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from service.auth.dependencies import ADMIN, require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.events import service
from service.events.schemas import (
    DeliveryList,
    DeliveryPublic,
    EventList,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookPublic,
)
from service.routing import ClockDep, Page, Session, UnitOfWorkRoute, next_cursor
from service.text import PRINTABLE

router = APIRouter(prefix="/v1", tags=["events"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(400, 401, 403, 422))

FEED_READERS = require("admin", "app")
WebhookIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE,
                                    description="`whk_…`")]
DeliveryIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE,
                                     description="`dlv_…`")]


@router.get("/events", operation_id="list_events", response_model=EventList,
            summary="Business events in commit order, from a cursor")
async def list_events(
    request: Request, session: Session, page: Page,
    types: Annotated[list[str] | None, Query(max_length=20, description=(
        "Only these event types (repeat the parameter or separate with commas)."))] = None,
    _: Principal = Depends(FEED_READERS),
) -> EventList:
    """Events in the order their transactions committed. Pass the last event's id as `after` to read on: an
    event that commits later always comes after it, never before."""
    await service.publish_committed(request.app.state.db)
    data = await service.feed(session, after=page.after, types=types, limit=page.limit)
    return EventList(data=data, next_cursor=next_cursor(data, page.limit, lambda e: e.id))


webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=UnitOfWorkRoute,
                     responses=problem_responses(400, 401, 403, 422))


@webhooks.post("", operation_id="create_webhook", response_model=WebhookCreated, status_code=201,
               summary="Subscribe an endpoint to events (the signing secret is shown once)")
async def create_webhook(body: WebhookCreate, request: Request, session: Session, clock: ClockDep,
                         principal: Principal = Depends(ADMIN)) -> WebhookCreated:
    """The endpoint receives the events committed after it was created."""
    await service.publish_committed(request.app.state.db)
    return await service.create_webhook(session, body, clock, actor=principal.key_id)


@webhooks.get("", operation_id="list_webhooks", response_model=WebhookList)
async def list_webhooks(session: Session, page: Page, _: Principal = Depends(ADMIN)) -> WebhookList:
    data = await service.list_webhooks(session, after=page.after, limit=page.limit)
    return WebhookList(data=data, next_cursor=next_cursor(data, page.limit, lambda w: w.id))


@webhooks.get("/{webhook_id}", operation_id="get_webhook", response_model=WebhookPublic,
              responses=problem_responses(404))
async def get_webhook(webhook_id: WebhookIdPath, session: Session, _: Principal = Depends(ADMIN)) -> WebhookPublic:
    return await service.get_webhook(session, webhook_id)


@webhooks.delete("/{webhook_id}", operation_id="delete_webhook", status_code=204, responses=problem_responses(404),
                 summary="Stop delivering to the endpoint and drop its delivery log")
async def delete_webhook(webhook_id: WebhookIdPath, session: Session, clock: ClockDep,
                         principal: Principal = Depends(ADMIN)) -> Response:
    await service.delete_webhook(session, webhook_id, clock, actor=principal.key_id)
    return Response(status_code=204)


@webhooks.post("/{webhook_id}/enable", operation_id="enable_webhook", response_model=WebhookPublic,
               responses=problem_responses(404), summary="Turn a disabled endpoint back on")
async def enable_webhook(webhook_id: WebhookIdPath, session: Session, clock: ClockDep,
                         principal: Principal = Depends(ADMIN)) -> WebhookPublic:
    return await service.enable_webhook(session, webhook_id, clock, actor=principal.key_id)


@webhooks.get("/{webhook_id}/deliveries", operation_id="list_webhook_deliveries", response_model=DeliveryList,
              responses=problem_responses(404), summary="The endpoint's delivery log, newest first")
async def list_webhook_deliveries(webhook_id: WebhookIdPath, session: Session, page: Page,
                                  _: Principal = Depends(ADMIN)) -> DeliveryList:
    data = await service.deliveries(session, webhook_id, after=page.after, limit=page.limit)
    return DeliveryList(data=data, next_cursor=next_cursor(data, page.limit, lambda d: d.id))


@webhooks.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", operation_id="redeliver_webhook_delivery",
               response_model=DeliveryPublic, responses=problem_responses(404, 409),
               summary="Send the delivery's event again now (with a fresh retry window)")
async def redeliver_webhook_delivery(webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath, session: Session,
                                     clock: ClockDep, principal: Principal = Depends(ADMIN)) -> DeliveryPublic:
    """Whatever its status, with its attempts counted afresh. 409 `webhook_disabled` while the endpoint is
    disabled; 409 `delivery_in_flight` while a worker is sending it (ask again once that attempt is in the
    log: one delivery is never sent twice at once)."""
    return await service.redeliver(session, webhook_id, delivery_id, clock, actor=principal.key_id)
