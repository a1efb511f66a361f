from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout.models import CheckoutReturn, CheckoutTransaction
from service.db import defer, dialect_of, fetch, insert_values_unless_duplicate

_TABLE = CheckoutTransaction.__table__
_ADD = insert(_TABLE)  # the columns its values name


async def add_transaction(session: AsyncSession, row: Any) -> bool:
    """Insert the receipt with its figures, once they are known: ``row`` has the table's columns as attributes
    (a plain object; the commit builds no ORM instance). False when the store already has this receipt: the
    unique constraint decides, never a read beforehand.

    On PostgreSQL the INSERT is deferred (:func:`service.db.defer`): it goes out with the commit's other writes
    in one statement, and a duplicate fails that statement with the constraint's violation, answered as
    ``duplicate_receipt`` (``errors.on_violation``); this returns True. On SQLite it runs at once."""
    values = {column.key: getattr(row, column.key) for column in _TABLE.columns}
    if dialect_of(session) == "postgresql":
        await defer(session, _ADD, values)
        return True
    return await insert_values_unless_duplicate(session, _TABLE, values) is not None


_HAS_RECEIPT = select(_TABLE.c.id).where(_TABLE.c.store_id == bindparam("p_store_id"),
                                         _TABLE.c.receipt_id == bindparam("p_receipt_id"))


async def has_receipt(session: AsyncSession, store_id: str, receipt_id: str) -> bool:
    return bool(await fetch(session, _HAS_RECEIPT, {"p_store_id": store_id, "p_receipt_id": receipt_id}))


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
