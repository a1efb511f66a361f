from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from service.auth import repository, service
from service.auth.dependencies import ADMIN
from service.auth.rules import Principal
from service.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyPublic
from service.errors import problem_responses
from service.routing import ClockDep, Page, Session, UnitOfWorkRoute, next_cursor
from service.text import PRINTABLE

KeyIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE, description="`key_…`")]

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(401, 403, 422))


@router.post("", operation_id="create_api_key", response_model=ApiKeyCreated, status_code=201,
             responses=problem_responses(404))
async def create_api_key(body: ApiKeyCreate, session: Session, clock: ClockDep,
                         principal: Principal = Depends(ADMIN)) -> ApiKeyCreated:
    key, secret = await service.create(session, body, clock, actor=principal.key_id)
    return ApiKeyCreated(id=key.id, key=secret, role=key.role, store_id=key.store_id, name=key.name)


@router.get("", operation_id="list_api_keys", response_model=ApiKeyList)
async def list_api_keys(session: Session, page: Page, _: Principal = Depends(ADMIN)) -> ApiKeyList:
    keys = await repository.list_page(session, after=page.after, limit=page.limit)
    return ApiKeyList(data=[ApiKeyPublic.model_validate(k, from_attributes=True) for k in keys],
                      next_cursor=next_cursor(keys, page.limit, lambda k: k.id))


@router.delete("/{key_id}", operation_id="revoke_api_key", status_code=204, responses=problem_responses(404))
async def revoke_api_key(key_id: KeyIdPath, session: Session, clock: ClockDep,
                         principal: Principal = Depends(ADMIN)) -> Response:
    await service.revoke(session, key_id, clock, actor=principal.key_id)
    return Response(status_code=204)
