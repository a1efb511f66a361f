from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout.models import CheckoutReturn, CheckoutTransaction
from service.db import insert_unless_duplicate


async def add_transaction(session: AsyncSession, row: CheckoutTransaction) -> bool:
    """Insert; False when the store already has this receipt (the unique constraint decides, not a read). On
    success ``row`` is attached to the session, so later changes to it are flushed as an UPDATE."""
    return await insert_unless_duplicate(session, row)


async def get(session: AsyncSession, transaction_id: str, *, lock: bool = False) -> CheckoutTransaction | None:
    query = select(CheckoutTransaction).where(CheckoutTransaction.id == transaction_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def returns_of(session: AsyncSession, transaction_id: str) -> list[CheckoutReturn]:
    query = select(CheckoutReturn).where(CheckoutReturn.transaction_id == transaction_id).order_by(
        CheckoutReturn.created_at, CheckoutReturn.id)
    return list((await session.execute(query)).scalars())


async def add_return(session: AsyncSession, row: CheckoutReturn) -> None:
    session.add(row)
    await session.flush()
