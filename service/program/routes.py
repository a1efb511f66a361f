from __future__ import annotations

from fastapi import APIRouter, Depends

from service.auth.dependencies import ADMIN, ANY_ROLE
from service.auth.rules import Principal
from service.errors import problem_responses
from service.program import service
from service.program.schemas import ProgramPublic, ProgramUpdate, StoreCreate, StoreList, StorePublic
from service.routing import ClockDep, Page, Session, UnitOfWorkRoute, next_cursor

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute,
                   responses=problem_responses(401, 403, 422))


@router.get("/program", operation_id="get_program", response_model=ProgramPublic, tags=["program"],
            summary="The program's configuration (readable by every role; changed by admin)")
async def get_program(session: Session, _: Principal = Depends(ANY_ROLE)) -> ProgramPublic:
    return await service.get(session)


@router.put("/program", operation_id="update_program", response_model=ProgramPublic, tags=["program"],
            responses=problem_responses(409), summary="Replace the program's configuration")
async def update_program(body: ProgramUpdate, session: Session, clock: ClockDep,
                         principal: Principal = Depends(ADMIN)) -> ProgramPublic:
    return await service.update(session, body, clock, actor=principal.key_id)


@router.get("/stores", operation_id="list_stores", response_model=StoreList, tags=["stores"])
async def list_stores(session: Session, page: Page, _: Principal = Depends(ANY_ROLE)) -> StoreList:
    stores = await service.list_stores(session, after=page.after, limit=page.limit)
    return StoreList(data=[StorePublic.model_validate(s, from_attributes=True) for s in stores],
                     next_cursor=next_cursor(stores, page.limit, lambda s: s.id))


@router.post("/stores", operation_id="create_store", response_model=StorePublic, status_code=201,
             tags=["stores"], responses=problem_responses(409))
async def create_store(body: StoreCreate, session: Session, clock: ClockDep,
                       principal: Principal = Depends(ADMIN)) -> StorePublic:
    store = await service.create_store(session, body, clock, actor=principal.key_id)
    return StorePublic.model_validate(store, from_attributes=True)
