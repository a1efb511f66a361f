from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, case, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout.models import CheckoutReturn, CheckoutTransaction
from service.db import defer, dialect_of, fetch, insert_values_unless_duplicate
from service.ledger.models import LedgerAccount, LedgerEntry
from service.ledger.rules import POINTS
from service.punchcards import rules as punch_rules
from service.punchcards.models import PunchReward

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


async def by_receipt(session: AsyncSession, store_id: str, receipt_id: str) -> CheckoutTransaction | None:
    return (await session.execute(select(CheckoutTransaction).where(
        CheckoutTransaction.store_id == store_id, CheckoutTransaction.receipt_id == receipt_id))).scalar_one_or_none()


async def get(session: AsyncSession, transaction_id: str, *, lock: bool = False) -> CheckoutTransaction | None:
    query = select(CheckoutTransaction).where(CheckoutTransaction.id == transaction_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


_SUMMARY_COLUMNS = [_TABLE.c[name] for name in ("id", "receipt_id", "store_id", "status", "occurred_at", "currency",
                                                 "subtotal", "discount", "net", "points_earned", "points_burned")]


async def member_sales(session: AsyncSession, member_id: str, *, store_id: str | None,
                       before: tuple[datetime, str] | None, limit: int) -> list[Row]:
    """A member's sales, newest first by ``occurred_at`` then id, from before ``before`` (by
    ``ix_checkout_transactions_member_id_occurred_at``); only ``store_id``'s when given."""
    query = (select(*_SUMMARY_COLUMNS).where(_TABLE.c.member_id == member_id)
             .order_by(_TABLE.c.occurred_at.desc(), _TABLE.c.id.desc()).limit(limit))
    if store_id is not None:
        query = query.where(_TABLE.c.store_id == store_id)
    if before is not None:
        at, sale_id = before
        query = query.where(or_(_TABLE.c.occurred_at < at, and_(_TABLE.c.occurred_at == at, _TABLE.c.id < sale_id)))
    return list((await session.execute(query)).all())


async def returns_of(session: AsyncSession, transaction_id: str) -> list[CheckoutReturn]:
    query = select(CheckoutReturn).where(CheckoutReturn.transaction_id == transaction_id).order_by(
        CheckoutReturn.created_at, CheckoutReturn.id)
    return list((await session.execute(query)).scalars())


async def spend_left(session: AsyncSession, transaction_ids: Sequence[str]) -> dict[str, int]:
    """Each sale's qualifying spend after its returns; 0 for a voided one."""
    returned = func.coalesce(func.sum(CheckoutReturn.qualifying_spend), 0)
    query = (select(CheckoutTransaction.id, CheckoutTransaction.status, CheckoutTransaction.qualifying_spend, returned)
             .outerjoin(CheckoutReturn, CheckoutReturn.transaction_id == CheckoutTransaction.id)
             .where(CheckoutTransaction.id.in_(list(transaction_ids)))
             .group_by(CheckoutTransaction.id, CheckoutTransaction.status, CheckoutTransaction.qualifying_spend))
    return {i: 0 if status == "voided" else int(spend) - int(back)
            for i, status, spend, back in (await session.execute(query)).all()}


async def add_return(session: AsyncSession, row: CheckoutReturn) -> None:
    session.add(row)
    await session.flush()


async def receipts_off_their_ledger(session: AsyncSession, limit: int) -> list[tuple[str, int, int, int, int]]:
    """Sales whose points figures are not what their ledger transaction moved on the member's points account:
    ``(sale, points_earned, earned in the ledger, points_burned, burned in the ledger)``. Returns and voids
    reverse the sale's figures, so a receipt that disagrees with its ledger would have them take back the wrong
    amount. Bonuses (a birthday's, a referral's) are entries of their own kinds, outside ``points_earned``."""
    points = and_(LedgerAccount.kind == POINTS, LedgerAccount.member_id.is_not(None))
    earned = func.coalesce(func.sum(case((and_(points, LedgerEntry.kind == "earn"), LedgerEntry.amount))), 0)
    burned = func.coalesce(func.sum(case((and_(points, LedgerEntry.kind == "burn"), -LedgerEntry.amount))), 0)
    sale = CheckoutTransaction
    query = (select(sale.id, sale.points_earned, earned, sale.points_burned, burned)
             .outerjoin(LedgerEntry, LedgerEntry.transaction_id == sale.ledger_transaction_id)
             .outerjoin(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .group_by(sale.id, sale.points_earned, sale.points_burned)
             .having(or_(sale.points_earned != earned, sale.points_burned != burned)).limit(limit))
    return [(i, int(e), int(le), int(b), int(lb)) for i, e, le, b, lb in (await session.execute(query)).all()]


async def rewards_off_their_stamps(session: AsyncSession, limit: int) -> list[tuple[str, str, int, int]]:
    """Sales whose punch-card rewards did not cost what their ledger transaction turned into rewards:
    ``(sale, stamp account, the rewards' recorded cost, the stamps the sale's ``reward`` entries took)``. A
    reward issued twice for one conversion, or one whose cost is not what it took, gives a reward (or stamps on
    its revocation) nobody paid for."""
    costs = (select(PunchReward.issued_by, PunchReward.program_id, func.sum(PunchReward.stamps_cost))
             .where(PunchReward.issued_by.is_not(None)).group_by(PunchReward.issued_by, PunchReward.program_id))
    taken = (select(CheckoutTransaction.id, LedgerAccount.kind, func.sum(-LedgerEntry.amount))
             .join(LedgerEntry, LedgerEntry.transaction_id == CheckoutTransaction.ledger_transaction_id)
             .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .where(LedgerEntry.kind == "reward", LedgerAccount.member_id.is_not(None))
             .group_by(CheckoutTransaction.id, LedgerAccount.kind))
    by_rewards = {(sale, punch_rules.account_kind(program)): int(n)
                  for sale, program, n in (await session.execute(costs)).all()}
    by_ledger = {(sale, account): int(n) for sale, account, n in (await session.execute(taken)).all()}
    return [(sale, account, by_rewards.get((sale, account), 0), by_ledger.get((sale, account), 0))
            for sale, account in sorted(by_rewards.keys() | by_ledger.keys())
            if by_rewards.get((sale, account), 0) != by_ledger.get((sale, account), 0)][:limit]
