"""Every query of the ledger, in one place. Writes here are called only by :mod:`service.ledger.service`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import insert_ignoring_duplicates
from service.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction, PointLot, PointLotDraw
from service.ledger.rules import GIFT_CARD

PROGRAM_PREFIX = "program:"  # the program's own accounts are named by their kind: ``program:points_issued`` …


async def ensure_accounts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert accounts that do not exist yet (concurrent callers are fine: conflicts are ignored)."""
    if rows:
        await session.execute(insert_ignoring_duplicates(session, LedgerAccount.__table__).values(list(rows)))


async def lock_member_accounts(session: AsyncSession, member_id: str, kinds: Sequence[str]) -> list[LedgerAccount]:
    """The member's accounts of these kinds, locked until the transaction ends (``FOR UPDATE`` on PostgreSQL;
    on SQLite the write transaction already holds the database lock). Always locked in id order, so two
    transactions locking several accounts cannot deadlock."""
    query = (select(LedgerAccount)
             .where(LedgerAccount.member_id == member_id, LedgerAccount.kind.in_(list(kinds)))
             .order_by(LedgerAccount.id)
             .with_for_update()
             .execution_options(populate_existing=True))
    return list((await session.execute(query)).scalars())


async def lock_gift_card_accounts(session: AsyncSession, gift_card_ids: Sequence[str]) -> list[LedgerAccount]:
    """The gift cards' accounts, locked in id order (after the member's, see ``service.lock_gift_card_accounts``)."""
    query = (select(LedgerAccount)
             .where(LedgerAccount.gift_card_id.in_(list(gift_card_ids)), LedgerAccount.kind == GIFT_CARD)
             .order_by(LedgerAccount.id)
             .with_for_update()
             .execution_options(populate_existing=True))
    return list((await session.execute(query)).scalars())


async def member_accounts(session: AsyncSession, member_id: str) -> list[LedgerAccount]:
    query = select(LedgerAccount).where(LedgerAccount.member_id == member_id).order_by(LedgerAccount.id)
    return list((await session.execute(query)).scalars())


async def add_transaction(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(LedgerTransaction).values(**row))


async def add_entries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(LedgerEntry.__table__), list(rows))  # one executemany, whatever the count


async def set_balances(session: AsyncSession, balances: dict[str, int]) -> None:
    """New cached balances by account id: one statement (an executemany), however many accounts moved."""
    if balances:
        table = LedgerAccount.__table__
        await session.execute(update(table).where(table.c.id == bindparam("account_id"))
                              .values(balance=bindparam("new_balance")),
                              [{"account_id": k, "new_balance": v} for k, v in sorted(balances.items())])


async def lots_to_draw(session: AsyncSession, member_id: str, amount: int, *,
                       prefer_transactions: Sequence[str] = ()) -> list[PointLot]:
    """The open lots a debit of ``amount`` can draw from, in the order it draws (DESIGN §3): the lots of
    ``prefer_transactions`` (a clawback takes back the points its own transaction earned first), then the
    soonest-expiring, a page at a time until they cover ``amount``. A member's history of exhausted lots is
    never read (the partial index holds open lots only), nor open lots the debit will not reach."""
    found: dict[int, PointLot] = {}
    if prefer_transactions:
        query = select(PointLot).where(PointLot.transaction_id.in_(list(prefer_transactions)),
                                       PointLot.member_id == member_id, PointLot.remaining > 0)
        found.update((lot.id, lot) for lot in (await session.execute(
            query.execution_options(populate_existing=True))).scalars())
    covered, offset, page = sum(lot.remaining for lot in found.values()), 0, 16
    while covered < amount:
        query = (select(PointLot).where(PointLot.member_id == member_id, PointLot.remaining > 0)
                 .order_by(PointLot.expires_at.asc().nulls_last(), PointLot.id).offset(offset).limit(page)
                 .execution_options(populate_existing=True))
        lots = list((await session.execute(query)).scalars())
        for lot in lots:
            if lot.id not in found:
                found[lot.id] = lot
                covered += lot.remaining
        if len(lots) < page:
            break
        offset, page = offset + page, page * 4
    return list(found.values())


async def lots_by_id(session: AsyncSession, lot_ids: Sequence[int]) -> list[PointLot]:
    if not lot_ids:
        return []
    query = select(PointLot).where(PointLot.id.in_(list(lot_ids))).execution_options(populate_existing=True)
    return list((await session.execute(query)).scalars())


async def outstanding_draws(session: AsyncSession, origin_ids: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(origin, lot_id, drawn minus restored)`` for the debits of the given ledger transactions."""
    if not origin_ids:
        return []
    query = (select(PointLotDraw.origin_transaction_id, PointLotDraw.lot_id, func.sum(PointLotDraw.amount))
             .where(PointLotDraw.origin_transaction_id.in_(list(origin_ids)))
             .group_by(PointLotDraw.origin_transaction_id, PointLotDraw.lot_id)
             .order_by(PointLotDraw.lot_id))
    return [(o, lot, int(n)) for o, lot, n in (await session.execute(query)).all() if n > 0]


async def add_lots(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(PointLot.__table__), list(rows))


async def set_lot_remaining(session: AsyncSession, changes: dict[int, int]) -> None:
    if changes:
        await session.execute(update(PointLot), [{"id": k, "remaining": v} for k, v in sorted(changes.items())])


async def add_draws(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(PointLotDraw.__table__), list(rows))


async def program_side_net(session: AsyncSession, transaction_ids: Sequence[str]) -> list[tuple[str, str, int]]:
    """``(program account id, asset, net amount)`` over the given ledger transactions: what a reversal of all
    of them has to undo (the member side mirrors it)."""
    query = (select(LedgerEntry.account_id, LedgerEntry.asset, func.sum(LedgerEntry.amount))
             .where(LedgerEntry.transaction_id.in_(list(transaction_ids)),
                    LedgerEntry.account_id.startswith(PROGRAM_PREFIX, autoescape=True))
             .group_by(LedgerEntry.account_id, LedgerEntry.asset)
             .order_by(LedgerEntry.account_id))
    return [(a, asset, int(n)) for a, asset, n in (await session.execute(query)).all() if n != 0]


async def gift_card_net(session: AsyncSession, transaction_ids: Sequence[str]) -> dict[str, int]:
    """``{gift card id: net amount}`` over the given ledger transactions, on the cards' own accounts."""
    query = (select(LedgerAccount.gift_card_id, func.sum(LedgerEntry.amount))
             .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .where(LedgerEntry.transaction_id.in_(list(transaction_ids)), LedgerAccount.kind == GIFT_CARD,
                    LedgerAccount.gift_card_id.is_not(None))
             .group_by(LedgerAccount.gift_card_id))
    return {card: int(n) for card, n in (await session.execute(query)).all() if n != 0}


async def members_with_expired_lots(session: AsyncSession, as_of: datetime, *, limit: int) -> list[str]:
    query = (select(PointLot.member_id).where(PointLot.remaining > 0, PointLot.expires_at <= as_of)
             .group_by(PointLot.member_id).order_by(PointLot.member_id).limit(limit))
    return list((await session.execute(query)).scalars())


async def expired_lots_of(session: AsyncSession, member_id: str, as_of: datetime) -> list[PointLot]:
    query = (select(PointLot)
             .where(PointLot.member_id == member_id, PointLot.remaining > 0, PointLot.expires_at <= as_of)
             .order_by(PointLot.id).execution_options(populate_existing=True))
    return list((await session.execute(query)).scalars())


async def member_entries_page(session: AsyncSession, member_id: str, *, before: int | None,
                              limit: int) -> list[tuple[LedgerEntry, str, str | None]]:
    """The member's entries, newest first, with their account kind and the transaction's reason."""
    query = (select(LedgerEntry, LedgerAccount.kind, LedgerTransaction.reason)
             .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
             .where(LedgerEntry.member_id == member_id)
             .order_by(LedgerEntry.id.desc()).limit(limit))
    if before is not None:
        query = query.where(LedgerEntry.id < before)
    return [(e, kind, reason) for e, kind, reason in (await session.execute(query)).all()]


async def upcoming_expiries(session: AsyncSession, member_id: str, *, after: datetime | None,
                            limit: int) -> list[tuple[datetime, int]]:
    """Points still held in lots that expire, by expiry time, soonest first (``after``: only later ones)."""
    query = (select(PointLot.expires_at, func.sum(PointLot.remaining))
             .where(PointLot.member_id == member_id, PointLot.remaining > 0, PointLot.expires_at.is_not(None))
             .group_by(PointLot.expires_at).order_by(PointLot.expires_at).limit(limit))
    if after is not None:
        query = query.where(PointLot.expires_at > after)
    return [(at, int(n)) for at, n in (await session.execute(query)).all()]


# -- verification: whole-ledger scans, for `loyalty verify` only --------------------------------------------------

async def unbalanced_transactions(session: AsyncSession, limit: int) -> list[tuple[str, str, int]]:
    query = (select(LedgerEntry.transaction_id, LedgerEntry.asset, func.sum(LedgerEntry.amount))
             .group_by(LedgerEntry.transaction_id, LedgerEntry.asset)
             .having(func.sum(LedgerEntry.amount) != 0).limit(limit))
    return [(t, a, int(n)) for t, a, n in (await session.execute(query)).all()]


async def balance_mismatches(session: AsyncSession, limit: int) -> list[tuple[str, int, int]]:
    total = func.coalesce(func.sum(LedgerEntry.amount), literal(0))
    query = (select(LedgerAccount.id, LedgerAccount.balance, total)
             .outerjoin(LedgerEntry, LedgerEntry.account_id == LedgerAccount.id)
             .where(LedgerAccount.balance.is_not(None))  # every owned account: members' and gift cards'
             .group_by(LedgerAccount.id, LedgerAccount.balance)
             .having(LedgerAccount.balance != total).limit(limit))
    return [(a, int(b), int(n)) for a, b, n in (await session.execute(query)).all()]


async def negative_stored_value(session: AsyncSession, kinds: Sequence[str], limit: int) -> list[tuple[str, int]]:
    query = (select(LedgerAccount.id, LedgerAccount.balance)
             .where(LedgerAccount.kind.in_(list(kinds)), LedgerAccount.balance < 0).limit(limit))
    return [(a, int(b)) for a, b in (await session.execute(query)).all()]


async def lot_mismatches(session: AsyncSession, limit: int) -> list[tuple[str, int, int]]:
    """Points accounts whose open lots do not hold ``max(balance, 0)``."""
    held = (select(PointLot.account_id, func.sum(PointLot.remaining).label("held"))
            .group_by(PointLot.account_id).subquery())
    held_total = func.coalesce(held.c.held, literal(0))
    query = (select(LedgerAccount.id, LedgerAccount.balance, held_total)
             .outerjoin(held, held.c.account_id == LedgerAccount.id)
             .where(LedgerAccount.kind == "points", LedgerAccount.member_id.is_not(None)))
    rows = (await session.execute(query)).all()
    return [(a, int(b), int(h)) for a, b, h in rows if int(h) != max(int(b), 0)][:limit]


async def orphan_entries(session: AsyncSession, limit: int) -> list[int]:
    query = (select(LedgerEntry.id).outerjoin(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
             .where(LedgerTransaction.id.is_(None)).limit(limit))
    return [int(i) for i in (await session.execute(query)).scalars()]


async def asset_mismatches(session: AsyncSession, limit: int) -> list[int]:
    query = (select(LedgerEntry.id).join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .where(LedgerAccount.asset != LedgerEntry.asset).limit(limit))
    return [int(i) for i in (await session.execute(query)).scalars()]


async def counts(session: AsyncSession) -> tuple[int, int, int]:
    tx = (await session.execute(select(func.count()).select_from(LedgerTransaction))).scalar_one()
    en = (await session.execute(select(func.count()).select_from(LedgerEntry))).scalar_one()
    ac = (await session.execute(select(func.count()).select_from(LedgerAccount))).scalar_one()
    return int(tx), int(en), int(ac)
