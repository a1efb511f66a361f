from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.audit import service
from service.audit.schemas import AuditPage
from service.auth.dependencies import require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.routing import Page, Session, UnitOfWorkRoute, next_cursor, numbered_cursor
from service.text import PRINTABLE

router = APIRouter(tags=["audit"], route_class=UnitOfWorkRoute, responses=problem_responses(400, 401, 403, 422))
Filter = Annotated[str | None, Query(min_length=1, max_length=64, pattern=PRINTABLE,
                                     description="Only the entries whose field is exactly this.")]


@router.get("/v1/audit-log", operation_id="list_audit_log", response_model=AuditPage,
            summary="Admin changes, newest first: who changed what, and when")
async def list_audit_log(session: Session, page: Page, action: Filter = None, target: Filter = None,
                         actor: Filter = None, _: Principal = Depends(require("admin"))) -> AuditPage:
    entries = await service.page(session, before=numbered_cursor(page), limit=page.limit, action=action,
                                 target=target, actor=actor)
    return AuditPage(data=entries, next_cursor=next_cursor(entries, page.limit, lambda entry: entry.id))
