from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.auth.dependencies import require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.members import service as members_service
from service.members.routes import MemberIdPath
from service.personalization import service
from service.personalization.schemas import MemberOffers, SegmentPublic, SegmentReport
from service.program import service as program_service
from service.program.schemas import TimeZone
from service.routing import ClockDep, Session, UnitOfWorkRoute

router = APIRouter(tags=["personalization"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(400, 401, 403, 422))


@router.get("/v1/members/{member_id}/segment", operation_id="get_member_segment", response_model=SegmentPublic,
            responses=problem_responses(404),
            summary="The member's quadrant, lifecycle and trailing-365-day figures, as of now")
async def get_member_segment(member_id: MemberIdPath, session: Session, clock: ClockDep,
                             principal: Principal = Depends(require("admin", "pos", "app"))) -> SegmentPublic:
    member = await members_service.get(session, member_id)
    return await service.segment_public(session, member, await program_service.get(session), clock.now())


@router.get("/v1/members/{member_id}/offers", operation_id="get_member_offers", response_model=MemberOffers,
            responses=problem_responses(404),
            summary="The ranked offers and nudges the till would show, without a basket")
async def get_member_offers(
    member_id: MemberIdPath, session: Session, clock: ClockDep,
    timezone: Annotated[TimeZone | None, Query(
        description="The calendar the offers' dates are told in, an IANA time zone: the phone's, or the store the "
                    "member shops at, so that the app names the days the till names. UTC without one.",
        examples=["Europe/Berlin"])] = None,
    principal: Principal = Depends(require("admin", "app")),
) -> MemberOffers:
    member = await members_service.get(session, member_id)
    return await service.member_offers(session, member, await program_service.get(session), clock.now(),
                                       timezone=timezone)


@router.get("/v1/reports/segments", operation_id="get_segment_report", response_model=SegmentReport,
            summary="Active members per quadrant and lifecycle, as the last `loyalty sweep` left them")
async def get_segment_report(session: Session,
                             principal: Principal = Depends(require("admin"))) -> SegmentReport:
    return await service.report(session, await program_service.get(session))
