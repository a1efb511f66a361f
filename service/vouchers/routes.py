from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service import ratelimit
from service.auth.dependencies import ADMIN, require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.routing import ClockDep, Page, Session, UnitOfWorkRoute, idempotent, next_cursor
from service.vouchers import service
from service.vouchers.schemas import (
    CampaignCreate,
    CampaignList,
    CampaignPublic,
    IssueRequest,
    VoucherDetail,
    VoucherList,
    VoucherPublic,
)

router = APIRouter(prefix="/v1", tags=["vouchers"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(401, 403, 422))

READERS = require("admin", "pos", "app")
CampaignIdPath = Annotated[str, Path(min_length=1, max_length=64, description="`cmp_…`")]
MemberIdPath = Annotated[str, Path(min_length=1, max_length=64, description="`mem_…`")]
CodePath = Annotated[str, Path(min_length=1, max_length=64, description="The voucher's code (dashes, spaces and "
                                                                        "case do not matter).")]
VoucherLookups = Annotated[ratelimit.Guard, Depends(ratelimit.failed_lookups(service.LOOKUP_SCOPE))]


@router.post("/voucher-campaigns", operation_id="create_voucher_campaign", response_model=CampaignPublic,
             status_code=201, summary="Start a voucher campaign (amount off, percent off or a free item)")
async def create_voucher_campaign(body: CampaignCreate, session: Session, clock: ClockDep,
                                  principal: Principal = Depends(ADMIN)) -> CampaignPublic:
    return await service.create_campaign(session, body, clock, actor=principal.key_id)


@router.get("/voucher-campaigns", operation_id="list_voucher_campaigns", response_model=CampaignList)
async def list_voucher_campaigns(session: Session, page: Page,
                                 _: Principal = Depends(ADMIN)) -> CampaignList:
    campaigns = await service.list_campaigns(session, after=page.after, limit=page.limit)
    return CampaignList(data=campaigns, next_cursor=next_cursor(campaigns, page.limit, lambda c: c.id))


@router.get("/voucher-campaigns/{campaign_id}", operation_id="get_voucher_campaign", response_model=CampaignPublic,
            responses=problem_responses(404))
async def get_voucher_campaign(campaign_id: CampaignIdPath, session: Session,
                               _: Principal = Depends(ADMIN)) -> CampaignPublic:
    return await service.get_campaign(session, campaign_id)


@router.put("/voucher-campaigns/{campaign_id}", operation_id="update_voucher_campaign",
            response_model=CampaignPublic, responses=problem_responses(404, 409),
            summary="Replace a campaign's configuration (`active: false` stops issuing)")
async def update_voucher_campaign(campaign_id: CampaignIdPath, body: CampaignCreate, session: Session,
                                  clock: ClockDep, principal: Principal = Depends(ADMIN)) -> CampaignPublic:
    return await service.update_campaign(session, campaign_id, body, clock, actor=principal.key_id)


@router.post("/voucher-campaigns/{campaign_id}/vouchers", operation_id="issue_vouchers",
             response_model=list[VoucherPublic], status_code=201, responses=problem_responses(404, 409),
             summary="Issue one voucher to a member, or `count` bearer codes (up to 10,000)",
             **idempotent(required=True))
async def issue_vouchers(campaign_id: CampaignIdPath, body: IssueRequest, session: Session, clock: ClockDep,
                         principal: Principal = Depends(ADMIN)) -> list[VoucherPublic]:
    return await service.issue(session, campaign_id, body, clock, actor=principal.key_id)


@router.get("/members/{member_id}/vouchers", operation_id="list_member_vouchers", response_model=VoucherList,
            responses=problem_responses(404))
async def list_member_vouchers(member_id: MemberIdPath, session: Session, clock: ClockDep, page: Page,
                               _: Principal = Depends(READERS)) -> VoucherList:
    vouchers = await service.member_vouchers(session, member_id, clock.now(), after=page.after, limit=page.limit)
    return VoucherList(data=vouchers, next_cursor=next_cursor(vouchers, page.limit, lambda v: v.id))


@router.get("/vouchers/{code}", operation_id="get_voucher", response_model=VoucherDetail,
            responses=problem_responses(404, 429),
            summary="A voucher's status by its code (unknown codes count against the key's failed look-ups)")
async def get_voucher(code: CodePath, session: Session, clock: ClockDep, guard: VoucherLookups,
                      _: Principal = Depends(READERS)) -> VoucherDetail:
    return await service.lookup(session, guard, code, clock.now())
