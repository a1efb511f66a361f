from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from service.auth.dependencies import authenticate, require
from service.auth.rules import Principal, role_allowed
from service.errors import problem_responses
from service.members import service
from service.members.schemas import MemberCreate, MemberList, MemberPublic, MemberUpdate
from service.program import service as program_service
from service.routing import ClockDep, KeptAnswer, ReadSession, Session, UnitOfWorkRoute, fast_paths, idempotent
from service.text import PRINTABLE, PRINTABLE_OR_EMPTY

router = APIRouter(prefix="/v1/members", tags=["members"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(400, 401, 403, 422))

# Ids, cursors and look-up values never hold control characters (PostgreSQL rejects NUL in text outright).
MemberIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE,
                                   description="`mem_…`")]
READERS = require("admin", "pos", "app")


def _region(request: Request) -> str:
    return request.app.state.settings.default_region


def _enrolled(body: bytes) -> str:
    return orjson.loads(body)["id"]


# The answer holds the new member's personal data: their erasure rewrites the copy kept for replays.
KEPT_ANSWER = KeptAnswer(subject=_enrolled)


@router.post("", operation_id="enroll_member", response_model=MemberPublic, status_code=201,
             responses=problem_responses(409), **idempotent(required=False, kept=KEPT_ANSWER))
async def enroll_member(body: MemberCreate, request: Request, session: Session, clock: ClockDep,
                        principal: Principal = Depends(READERS)) -> MemberPublic:
    member = await service.enroll(session, body, clock, region=_region(request), principal=principal)
    return service.to_public(member, await program_service.get(session), principal)


LOOKUP_KEY_MAX = 32  # characters of a card number or phone number in a look-up


@router.get("", operation_id="lookup_members", response_model=MemberList,
            summary="Exact look-up by one of card number, phone or email")
async def lookup_members(
    request: Request, session: ReadSession, clock: ClockDep,
    card_number: Annotated[str | None, Query(max_length=LOOKUP_KEY_MAX)] = None,
    phone: Annotated[str | None, Query(max_length=LOOKUP_KEY_MAX)] = None,
    email: Annotated[str | None, Query(max_length=254, pattern=PRINTABLE_OR_EMPTY)] = None,
    principal: Principal = Depends(READERS),
) -> MemberList:
    members = await service.lookup_public(session, principal, card_number=card_number, phone=phone, email=email,
                                          region=_region(request), now=clock.now())
    return MemberList(data=members, next_cursor=None)


_MEMBER_LIST = MemberList.__pydantic_serializer__


async def lookup_members_alone(request: Request) -> bytes | None:
    """:func:`lookup_members`' fast answer (``routing.FastPaths``): a till's look-up by one card number or phone
    number, for a key that may read members, without a session (``service.lookup_public_alone``). A look-up by
    email, by more than one key or by anything the route would refuse is left to the route, as is a member whose
    tier review fell due."""
    given = request.query_params.multi_items()
    if len(given) != 1:
        return None
    ((name, value),) = given
    if name not in ("card_number", "phone") or len(value) > LOOKUP_KEY_MAX:
        return None
    principal = await authenticate(request)
    if not role_allowed(principal, READERS.roles):
        return None
    members = await service.lookup_public_alone(
        request.app.state.db, principal, card_number=value if name == "card_number" else None,
        phone=value if name == "phone" else None, region=_region(request), now=request.app.state.clock.now())
    return None if members is None else _MEMBER_LIST.to_json(MemberList(data=members, next_cursor=None))


@router.get("/{member_id}", operation_id="get_member", response_model=MemberPublic,
            responses=problem_responses(404))
async def get_member(member_id: MemberIdPath, session: Session, clock: ClockDep,
                     principal: Principal = Depends(READERS)) -> MemberPublic:
    from service.tiers import service as tiers_service  # tiers builds on members: imported late

    member = await service.get(session, member_id)
    program = await program_service.get(session)
    await tiers_service.refresh(session, member, program, clock.now())  # due tier reviews, lazily
    return service.to_public(member, program, principal)


@router.patch("/{member_id}", operation_id="update_member", response_model=MemberPublic,
              responses=problem_responses(404, 409))
async def update_member(member_id: MemberIdPath, body: MemberUpdate, request: Request, session: Session,
                        clock: ClockDep, principal: Principal = Depends(READERS)) -> MemberPublic:
    member = await service.update(session, member_id, body, clock, region=_region(request), principal=principal)
    return service.to_public(member, await program_service.get(session), principal)


@router.delete("/{member_id}", operation_id="erase_member", status_code=204, responses=problem_responses(404),
               summary="Erase the member's personal data (the ledger is kept)")
async def erase_member(member_id: MemberIdPath, session: Session, clock: ClockDep,
                       principal: Principal = Depends(require("admin", "app"))) -> Response:
    await service.erase(session, member_id, clock, principal=principal)
    return Response(status_code=204)


FAST_PATHS = fast_paths(router, {lookup_members: lookup_members_alone})
