from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.auth.dependencies import require
from service.auth.rules import Principal
from service.clock import RequestTime
from service.errors import problem_responses
from service.reports import service
from service.reports.schemas import RedemptionReport
from service.routing import ClockDep, Session, UnitOfWorkRoute

router = APIRouter(tags=["reports"], route_class=UnitOfWorkRoute, responses=problem_responses(400, 401, 403, 422))


@router.get("/v1/reports/redemptions", operation_id="get_redemption_report", response_model=RedemptionReport,
            response_model_by_alias=True,
            summary="How much of what the program gave out was used: points, vouchers, punch card rewards")
async def get_redemption_report(
    session: Session, clock: ClockDep,
    start: Annotated[RequestTime | None, Query(alias="from", description=(
        "Start of the period (RFC 3339, inclusive). Default: since the beginning."))] = None,
    end: Annotated[RequestTime | None, Query(alias="to", description=(
        "End of the period (RFC 3339, exclusive). Default: now."))] = None,
    _: Principal = Depends(require("admin")),
) -> RedemptionReport:
    return await service.redemptions(session, start, end, clock.now())
