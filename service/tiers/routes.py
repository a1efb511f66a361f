from __future__ import annotations

from fastapi import APIRouter, Depends

from service.auth.dependencies import require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.members import service as members_service
from service.members.routes import MemberIdPath
from service.program import service as program_service
from service.routing import ClockDep, Session, UnitOfWorkRoute
from service.tiers import service
from service.tiers.schemas import TierPublic

router = APIRouter(prefix="/v1/members", tags=["tiers"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(400, 401, 403, 422))


@router.get("/{member_id}/tier", operation_id="get_member_tier", response_model=TierPublic,
            responses=problem_responses(404),
            summary="The member's tier, qualifying spend, what reaches the next tier, and the tier history")
async def get_member_tier(member_id: MemberIdPath, session: Session, clock: ClockDep,
                          principal: Principal = Depends(require("admin", "pos", "app"))) -> TierPublic:
    member = await members_service.get(session, member_id)
    return await service.summary(session, member, await program_service.get(session), clock.now())
