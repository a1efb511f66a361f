from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service.auth.dependencies import ADMIN, require
from service.auth.rules import Principal
from service.errors import problem_responses
from service.punchcards import service
from service.punchcards.schemas import PunchCardList, PunchProgramCreate, PunchProgramList, PunchProgramPublic
from service.routing import ClockDep, Page, Session, UnitOfWorkRoute, next_cursor

router = APIRouter(prefix="/v1", tags=["punch cards"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(401, 403, 422))

READERS = require("admin", "pos", "app")
ProgramIdPath = Annotated[str, Path(min_length=1, max_length=64,
                                    description="`pcp_…` (made before 2026-12-07: `ppg_…`)")]
MemberIdPath = Annotated[str, Path(min_length=1, max_length=64, description="`mem_…`")]


@router.post("/punch-card-programs", operation_id="create_punch_card_program", response_model=PunchProgramPublic,
             status_code=201, summary="Start a punch-card program (buy N, get one free)")
async def create_punch_card_program(body: PunchProgramCreate, session: Session, clock: ClockDep,
                                    principal: Principal = Depends(ADMIN)) -> PunchProgramPublic:
    return await service.create_program(session, body, clock, actor=principal.key_id)


@router.get("/punch-card-programs", operation_id="list_punch_card_programs", response_model=PunchProgramList)
async def list_punch_card_programs(session: Session, page: Page,
                                   _: Principal = Depends(ADMIN)) -> PunchProgramList:
    programs = await service.list_programs(session, after=page.after, limit=page.limit)
    return PunchProgramList(data=programs, next_cursor=next_cursor(programs, page.limit, lambda p: p.id))


@router.get("/punch-card-programs/{program_id}", operation_id="get_punch_card_program",
            response_model=PunchProgramPublic, responses=problem_responses(404))
async def get_punch_card_program(program_id: ProgramIdPath, session: Session,
                                 _: Principal = Depends(ADMIN)) -> PunchProgramPublic:
    return await service.get_program(session, program_id)


@router.put("/punch-card-programs/{program_id}", operation_id="update_punch_card_program",
            response_model=PunchProgramPublic, responses=problem_responses(404),
            summary="Replace a program's configuration (`active: false` stops stamping)")
async def update_punch_card_program(program_id: ProgramIdPath, body: PunchProgramCreate, session: Session,
                                    clock: ClockDep, principal: Principal = Depends(ADMIN)) -> PunchProgramPublic:
    return await service.update_program(session, program_id, body, clock, actor=principal.key_id)


@router.get("/members/{member_id}/punch-cards", operation_id="list_member_punch_cards",
            response_model=PunchCardList, responses=problem_responses(404),
            summary="The member's punch cards by programme id, paged (the cursor is a programme id)")
async def list_member_punch_cards(member_id: MemberIdPath, session: Session, clock: ClockDep, page: Page,
                                  _: Principal = Depends(READERS)) -> PunchCardList:
    cards = await service.member_cards(session, member_id, clock.now(), after=page.after, limit=page.limit)
    return PunchCardList(data=cards, next_cursor=next_cursor(cards, page.limit, lambda card: card.program_id))
