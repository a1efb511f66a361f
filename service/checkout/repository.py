from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout.models import CheckoutReturn, CheckoutTransaction
from service.db import defer, insert_unless_duplicate

# What a commit learns after inserting its receipt: written once, by record_figures. The UPDATE sets the columns
# its parameters name, as any UPDATE run without .values() does.
_FIGURES = ("subtotal", "discount", "net", "points_burned", "points_earned", "qualifying_spend",
            "points_balance_after", "lines", "applied", "ledger_transaction_id")
_RECORD_FIGURES = update(CheckoutTransaction.__table__).where(CheckoutTransaction.__table__.c.id == bindparam("p_id"))


async def add_transaction(session: AsyncSession, row: CheckoutTransaction) -> bool:
    """Insert; False when the store already has this receipt (the unique constraint decides, not a read). The
    row stays outside the session: :func:`record_figures` writes the sale's figures once they are known."""
    return await insert_unless_duplicate(session, row, attach=False)


async def record_figures(session: AsyncSession, row: CheckoutTransaction) -> None:
    """Write the sale's figures (totals, points, lines, what was applied, the ledger transaction) to the receipt
    :func:`add_transaction` inserted, in one UPDATE (deferred: it goes out with the commit's next statement)."""
    await defer(session, _RECORD_FIGURES, {"p_id": row.id, **{name: getattr(row, name) for name in _FIGURES}})


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
