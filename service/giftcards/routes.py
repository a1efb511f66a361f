from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Path, Request

from service.auth.dependencies import ADMIN, require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.giftcards import rules, service
from service.giftcards.schemas import GiftCardCode, GiftCardIssue, GiftCardIssued, GiftCardPublic, Pin
from service.routing import ClockDep, KeptAnswer, Session, UnitOfWorkRoute, idempotent

router = APIRouter(tags=["gift-cards"], route_class=UnitOfWorkRoute, responses=problem_responses(400, 401, 403, 422))

READERS = require("admin", "pos", "app")


def _pin_key(request: Request) -> str | None:
    return request.app.state.settings.gift_card_pin_key


async def pin_guard(request: Request) -> service.PinGuard:
    return service.PinGuard(_pin_key(request), request.app.state.db)


PinGuardDep = Annotated[service.PinGuard, Depends(pin_guard)]


def _redact_pins(body: bytes) -> bytes:
    return orjson.dumps([{k: v for k, v in card.items() if k != "pin"} for card in orjson.loads(body)])


def _restore_pins(request: Request, body: bytes) -> bytes:
    key = service.require_pin_key(_pin_key(request))
    return orjson.dumps([GiftCardIssued(**card, pin=rules.card_pin(key, card["id"])).model_dump(mode="json")
                         for card in orjson.loads(body)])


# An issue answer is kept for replays without its PINs (they rest nowhere); a replay derives them again.
KEPT_ANSWER = KeptAnswer(redact=_redact_pins, restore=_restore_pins)


@router.post("/v1/gift-cards", operation_id="issue_gift_cards", response_model=list[GiftCardIssued],
             status_code=201, responses=problem_responses(503),
             summary="Issue gift cards loaded with an amount; their PINs are shown in this answer only",
             **idempotent(required=True, kept=KEPT_ANSWER))
async def issue_gift_cards(body: GiftCardIssue, session: Session, clock: ClockDep, guard: PinGuardDep,
                           principal: Principal = Depends(ADMIN)) -> list[GiftCardIssued]:
    return await service.issue(session, body, guard, principal, clock)


@router.get("/v1/gift-cards/{code}", operation_id="get_gift_card", response_model=GiftCardPublic,
            responses=problem_responses(404, 409, 429, 503),
            summary="A gift card's balance, with its PIN (wrong PINs are limited per card and per key)")
async def get_gift_card(code: Annotated[GiftCardCode, Path(description="The card's code (dashes and spaces "
                                                                        "are ignored).")],
                        pin: Annotated[Pin, Header(alias="X-Gift-Card-Pin", description="The card's PIN.")],
                        session: Session, clock: ClockDep, guard: PinGuardDep,
                        principal: Principal = Depends(READERS)) -> GiftCardPublic:
    return await service.get(session, code, pin, guard, principal, clock)
