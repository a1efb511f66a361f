from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from service.auth.dependencies import require
from service.auth.rules import Principal
from service.checkout import service
from service.checkout.schemas import (
    CheckoutRequest,
    CommitRequest,
    Quote,
    ReturnPublic,
    ReturnRequest,
    TransactionPublic,
    TransactionSummaryPage,
)
from service.errors import problem_responses
from service.giftcards.routes import PinGuardDep
from service.members.routes import MemberIdPath
from service.routing import (
    ClockDep,
    Page,
    ReadSession,
    Session,
    UnitOfWorkRoute,
    idempotent,
    next_cursor,
    timed_cursor,
    timed_cursor_of,
)
from service.text import PRINTABLE
from service.vouchers.routes import VoucherLookups

router = APIRouter(prefix="/v1/checkout", tags=["checkout"], route_class=UnitOfWorkRoute,
                   responses=problem_responses(400, 401, 403, 404, 422))

TILLS = require("admin", "pos")
READERS = require("admin", "pos", "app")
TransactionIdPath = Annotated[str, Path(min_length=1, max_length=64, description="`txn_…`")]
StoreIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE)]
ReceiptIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE,
                                    description="The POS's receipt number, as the commit gave it (it may hold `/`)")]


def _region(request: Request) -> str:
    return request.app.state.settings.default_region


@router.post("/quote", operation_id="create_quote", response_model=Quote,
             responses=problem_responses(409, 429, 503), summary="What loyalty changes about a basket (read-only)")
async def create_quote(body: CheckoutRequest, request: Request, session: ReadSession, clock: ClockDep,
                       guard: PinGuardDep, lookups: VoucherLookups, principal: Principal = Depends(TILLS)) -> Quote:
    return await service.quote(session, body, principal, clock, region=_region(request), guard=guard,
                                lookups=lookups)


@router.post("/transactions", operation_id="commit_transaction", response_model=TransactionPublic, status_code=201,
             responses=problem_responses(409, 429, 503),
             summary="Commit a sale: burn and earn in one transaction",
             **idempotent(required=True))
async def commit_transaction(body: CommitRequest, request: Request, session: Session, clock: ClockDep,
                             guard: PinGuardDep, lookups: VoucherLookups,
                             principal: Principal = Depends(TILLS)) -> TransactionPublic:
    return await service.commit(session, body, principal, clock, region=_region(request), guard=guard,
                                lookups=lookups)


@router.get("/transactions/{transaction_id}", operation_id="get_checkout_transaction",
            response_model=TransactionPublic)
async def get_checkout_transaction(transaction_id: TransactionIdPath, session: Session, clock: ClockDep,
                                   principal: Principal = Depends(TILLS)) -> TransactionPublic:
    return await service.get(session, transaction_id, principal, clock)


@router.post("/transactions/{transaction_id}/void", operation_id="void_checkout_transaction",
             response_model=TransactionPublic, responses=problem_responses(409), **idempotent(required=True))
async def void_checkout_transaction(transaction_id: TransactionIdPath, session: Session, clock: ClockDep,
                                    principal: Principal = Depends(TILLS)) -> TransactionPublic:
    return await service.void(session, transaction_id, principal, clock)


@router.post("/transactions/{transaction_id}/returns", operation_id="return_checkout_lines",
             response_model=ReturnPublic, status_code=201, responses=problem_responses(409),
             **idempotent(required=True))
async def return_checkout_lines(transaction_id: TransactionIdPath, body: ReturnRequest, session: Session,
                                clock: ClockDep, principal: Principal = Depends(TILLS)) -> ReturnPublic:
    return await service.return_lines(session, transaction_id, body, principal, clock)


# A store's receipt by its number: the POS's own id for the sale.
receipts = APIRouter(prefix="/v1/stores", tags=["checkout"], route_class=UnitOfWorkRoute,
                     responses=problem_responses(400, 401, 403, 404, 422))


@receipts.get("/{store_id}/receipts/{receipt_id:path}", operation_id="get_store_receipt",
              response_model=TransactionPublic,
              summary="The sale a store committed under a receipt number (after a 409 duplicate_receipt)")
async def get_store_receipt(store_id: StoreIdPath, receipt_id: ReceiptIdPath, session: Session, clock: ClockDep,
                            principal: Principal = Depends(TILLS)) -> TransactionPublic:
    return await service.by_receipt(session, store_id, receipt_id, principal, clock)


# The member's purchase history sits beside the member's other reads, under /v1/members.
history = APIRouter(prefix="/v1/members", tags=["checkout"], route_class=UnitOfWorkRoute,
                    responses=problem_responses(400, 401, 403, 404, 422))


@history.get("/{member_id}/transactions", operation_id="list_member_transactions",
             response_model=TransactionSummaryPage,
             summary="The member's sales, newest first (a till sees its own store's)")
async def list_member_transactions(member_id: MemberIdPath, session: Session, page: Page,
                                   principal: Principal = Depends(READERS)) -> TransactionSummaryPage:
    sales = await service.member_sales(session, member_id, principal, before=timed_cursor(page), limit=page.limit)
    return TransactionSummaryPage(data=sales, next_cursor=next_cursor(
        sales, page.limit, lambda sale: timed_cursor_of(sale.occurred_at, sale.id)))
