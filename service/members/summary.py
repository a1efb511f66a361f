"""``GET /v1/members/{id}/summary``: the member and every balance in one answer, for the till's screen and the
app's home page. A read view over the domains' own services (each answers its part as its own endpoint does)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from service.auth.dependencies import require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.members import service as members_service
from service.members.routes import MemberIdPath
from service.members.schemas import MemberPublic
from service.personalization import service as personalization
from service.personalization.schemas import SegmentPublic
from service.points import service as points_service
from service.points.schemas import PointsPublic
from service.program import service as program_service
from service.punchcards import service as punch_service
from service.punchcards.schemas import PunchCardPublic
from service.routing import ClockDep, Session, UnitOfWorkRoute
from service.tiers import service as tiers_service
from service.tiers.schemas import TierPublic
from service.vouchers import service as voucher_service
from service.vouchers.schemas import VoucherPublic
from service.wallet import service as wallet_service
from service.wallet.schemas import WalletPublic


class MemberSummary(BaseModel):
    member: MemberPublic
    points: PointsPublic
    tier: TierPublic
    punch_cards: list[PunchCardPublic]
    vouchers: list[VoucherPublic] = Field(description="The member's vouchers usable now, soonest-expiring first.")
    wallet: WalletPublic
    segment: SegmentPublic


router = APIRouter(prefix="/v1/members", tags=["members"], route_class=UnitOfWorkRoute)


@router.get("/{member_id}/summary", operation_id="get_member_summary", response_model=MemberSummary,
            responses=problem_responses(404),
            summary="The member with points, tier (and its perks), punch cards, vouchers, wallet and segment")
async def get_member_summary(member_id: MemberIdPath, session: Session, clock: ClockDep,
                             principal: Principal = Depends(require("admin", "pos", "app"))) -> MemberSummary:
    now = clock.now()
    member = await members_service.get(session, member_id)
    program = await program_service.get(session)
    await tiers_service.refresh(session, member, program, now)  # due tier reviews, as every member read
    return MemberSummary(
        member=members_service.to_public(member, program, principal),
        points=await points_service.points(session, member_id),
        tier=await tiers_service.summary(session, member, program, now),
        punch_cards=await punch_service.member_cards(session, member_id, now),
        vouchers=await voucher_service.usable_public(session, member_id, now),
        wallet=await wallet_service.wallet(session, member_id),
        segment=await personalization.segment_public(session, member, program, now),
    )
