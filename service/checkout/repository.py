from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from service.checkout.models import CheckoutReturn, CheckoutTransaction
from service.db import prebuilt

_TRANSACTIONS = CheckoutTransaction.__table__
# INSERT … ON CONFLICT DO NOTHING RETURNING id, prebuilt: the columns are the execution's keys.
_ADD_TRANSACTION = prebuilt(lambda insert: insert(_TRANSACTIONS).on_conflict_do_nothing()
                            .returning(_TRANSACTIONS.c.id))


async def add_transaction(session: AsyncSession, row: CheckoutTransaction) -> bool:
    """Insert; False when the store already has this receipt (the unique constraint decides, not a read). On
    success ``row`` is attached to the session as a persistent object, so later changes to it are flushed as an
    UPDATE (as :func:`service.db.insert_unless_duplicate` does, with the statement built once)."""
    values = {column.key: value for column in _TRANSACTIONS.columns
              if (value := getattr(row, column.key)) is not None or not column.nullable}
    inserted = (await session.execute(_ADD_TRANSACTION(session), values)).first()
    if inserted is None:
        return False
    row.id = inserted[0]
    make_transient_to_detached(row)
    session.add(row)
    return True


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
