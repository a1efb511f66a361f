from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service.auth.dependencies import ADMIN, require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.routing import ClockDep, Session, UnitOfWorkRoute, idempotent
from service.wallet import service
from service.wallet.schemas import CashOutPublic, LiabilityPublic, TopUpCreate, TopUpPublic, WalletPublic

router = APIRouter(tags=["wallet"], route_class=UnitOfWorkRoute, responses=problem_responses(400, 401, 403, 422))

READERS = require("admin", "pos", "app")
TOP_UP = require("admin", "pos")
MemberIdPath = Annotated[str, Path(min_length=1, max_length=64, description="`mem_…`")]


@router.get("/v1/members/{member_id}/wallet", operation_id="get_member_wallet", response_model=WalletPublic,
            responses=problem_responses(404))
async def get_member_wallet(member_id: MemberIdPath, session: Session,
                            _: Principal = Depends(READERS)) -> WalletPublic:
    return await service.wallet(session, member_id)


@router.post("/v1/members/{member_id}/wallet/top-ups", operation_id="top_up_member_wallet",
             response_model=TopUpPublic, status_code=201, responses=problem_responses(404, 409),
             summary="Pay money into the wallet (plus any top-up bonus); never earns points",
             **idempotent(required=True))
async def top_up_member_wallet(member_id: MemberIdPath, body: TopUpCreate, session: Session, clock: ClockDep,
                               principal: Principal = Depends(TOP_UP)) -> TopUpPublic:
    return await service.top_up(session, member_id, body, principal, clock)


@router.post("/v1/members/{member_id}/wallet/cash-out", operation_id="cash_out_member_wallet",
             response_model=CashOutPublic, status_code=200, responses=problem_responses(404),
             summary="Pay the cash part back; the bonus part is forfeited", **idempotent(required=True))
async def cash_out_member_wallet(member_id: MemberIdPath, session: Session, clock: ClockDep,
                                 principal: Principal = Depends(ADMIN)) -> CashOutPublic:
    return await service.cash_out(session, member_id, clock, actor=principal.key_id)


@router.get("/v1/reports/liability", operation_id="get_liability_report", response_model=LiabilityPublic,
            summary="What the program owes its members, from the ledger")
async def get_liability_report(session: Session, _: Principal = Depends(ADMIN)) -> LiabilityPublic:
    return await service.liability(session)
