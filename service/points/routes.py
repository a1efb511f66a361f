from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service.auth.dependencies import ADMIN, require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.points import service
from service.points.schemas import AdjustmentCreate, LedgerPage, LedgerTransactionPublic, PointsPublic
from service.routing import ClockDep, Page, Session, UnitOfWorkRoute, idempotent, next_cursor, numbered_cursor

router = APIRouter(prefix="/v1/members", tags=["points"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(400, 401, 403, 404, 422))

READERS = require("admin", "pos", "app")
MemberIdPath = Annotated[str, Path(min_length=1, max_length=64, description="`mem_…`")]


@router.get("/{member_id}/points", operation_id="get_member_points", response_model=PointsPublic)
async def get_member_points(member_id: MemberIdPath, session: Session,
                            _: Principal = Depends(READERS)) -> PointsPublic:
    return await service.points(session, member_id)


@router.get("/{member_id}/ledger", operation_id="list_member_ledger", response_model=LedgerPage,
            summary="The member's ledger entries, newest first")
async def list_member_ledger(member_id: MemberIdPath, session: Session, page: Page,
                             principal: Principal = Depends(READERS)) -> LedgerPage:
    """Every entry on the member's accounts (points, stamps, wallet), newest first. A till's key sees only the
    entries of its own store's transactions (its sales, returns, voids and top-ups): not another store's, nor
    those of no store (admin adjustments and top-ups, expiry, cash-outs)."""
    entries = await service.ledger_entries(session, member_id, principal, before=numbered_cursor(page),
                                           limit=page.limit)
    return LedgerPage(data=entries, next_cursor=next_cursor(entries, page.limit, lambda entry: entry.id))


@router.post("/{member_id}/points/adjustments", operation_id="adjust_member_points",
             response_model=LedgerTransactionPublic, status_code=201, responses=problem_responses(409),
             summary="Add or remove points by hand, with a reason", **idempotent(required=True))
async def adjust_member_points(member_id: MemberIdPath, body: AdjustmentCreate, session: Session, clock: ClockDep,
                               principal: Principal = Depends(ADMIN)) -> LedgerTransactionPublic:
    return await service.adjust(session, member_id, body, clock, actor=principal.key_id)
