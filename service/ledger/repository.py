"""Every query of the ledger, in one place. Writes here are called only by :mod:`service.ledger.service`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, Row, String, bindparam, func, literal, null, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable, literal_column

from service.db import UTCDateTime, defer, dialect_of, execute, fetch, one_of, prebuilt, prefetch
from service.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction, PointLot, PointLotDraw
from service.ledger.rules import EXPIRY, GIFT_CARD, STORED_VALUE_KINDS

PROGRAM_PREFIX = "program:"  # the program's own accounts are named by their kind: ``program:points_issued`` …


_ACCOUNTS = LedgerAccount.__table__
_LOTS = PointLot.__table__
# What a locked account is read as: plain columns, no ORM object (nothing is flushed back through the session;
# ``set_balances`` writes the balances).
_ACCOUNT_COLUMNS = (_ACCOUNTS.c.id, _ACCOUNTS.c.kind, _ACCOUNTS.c.asset, _ACCOUNTS.c.member_id,
                    _ACCOUNTS.c.gift_card_id, _ACCOUNTS.c.balance)
# What a debit needs of a lot (``rules.Lot``).
_LOT_COLUMNS = (_LOTS.c.id, _LOTS.c.expires_at, _LOTS.c.remaining, _LOTS.c.transaction_id)
# A lot still open, written as the literal ``remaining > 0`` of the partial index ``ix_point_lots_open``. As a
# parameter, PostgreSQL could not use that index in a generic plan (it cannot know the value), so the generic
# plan of every read of open lots was a scan of the table, and it planned each execution afresh instead: the
# read under the commit's locks spent 0.2 to 0.46 ms in planning for 0.1 in execution.
_OPEN = _LOTS.c.remaining > literal_column("0")

_ENSURE_ACCOUNTS = prebuilt(lambda insert: insert(_ACCOUNTS).on_conflict_do_nothing())


async def ensure_accounts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert accounts that do not exist yet (concurrent callers are fine: conflicts are ignored)."""
    if rows:
        await session.execute(_ENSURE_ACCOUNTS(session), list(rows))  # one executemany, whatever the count


_OPEN_COLUMNS = ("id", "kind", "asset", "member_id", "balance", "created_at")
_OPEN_ACCOUNTS: dict[int, Callable[[AsyncSession], Executable]] = {}  # by the number of rows


async def open_accounts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert accounts that do not exist yet, as one write deferred to the session's next statement
    (``db.defer``): for a member's accounts created with the member, in the enrolment's own round trips."""
    if not rows:
        return
    statement = _OPEN_ACCOUNTS.get(len(rows))
    if statement is None:
        statement = _OPEN_ACCOUNTS[len(rows)] = prebuilt(lambda insert, count=len(rows): insert(_ACCOUNTS).values([
            {column: bindparam(f"p_{column}_{n}") for column in _OPEN_COLUMNS} for n in range(count)
        ]).on_conflict_do_nothing())
    await defer(session, statement(session),
                {f"p_{column}_{n}": value for n, row in enumerate(rows) for column, value in row.items()})


def _lock_member_accounts(insert, *, nowait: bool = False, skip_locked: bool = False):
    return (select(*_ACCOUNT_COLUMNS)
            .where(_ACCOUNTS.c.member_id == bindparam("p_member_id"), one_of(insert, _ACCOUNTS.c.kind, "p_kinds"))
            .order_by(_ACCOUNTS.c.id)
            .with_for_update(nowait=nowait, skip_locked=skip_locked))


_LOCK_MEMBER_ACCOUNTS = prebuilt(lambda insert: _lock_member_accounts(insert))
_LOCK_MEMBER_ACCOUNTS_NOWAIT = prebuilt(lambda insert: _lock_member_accounts(insert, nowait=True))
_LOCK_MEMBER_ACCOUNTS_SKIP_LOCKED = prebuilt(lambda insert: _lock_member_accounts(insert, skip_locked=True))


async def lock_member_accounts(session: AsyncSession, member_id: str, kinds: Sequence[str], *,
                               nowait: bool = False, skip_locked: bool = False) -> list[Row]:
    """The member's accounts of these kinds (``_ACCOUNT_COLUMNS``), locked until the transaction ends (``FOR
    UPDATE`` on PostgreSQL; on SQLite the write transaction already holds the database lock). Always locked in
    id order, so two transactions locking several accounts cannot deadlock. ``nowait``: fail at once (SQLSTATE
    55P03, which reruns the request) instead of waiting for an account another transaction holds;
    ``skip_locked``: leave out, without waiting, the accounts another transaction holds."""
    statement = (_LOCK_MEMBER_ACCOUNTS_NOWAIT if nowait else _LOCK_MEMBER_ACCOUNTS_SKIP_LOCKED if skip_locked
                 else _LOCK_MEMBER_ACCOUNTS)
    return await fetch(session, statement(session), {"p_member_id": member_id, "p_kinds": list(kinds)})


_LOCK_GIFT_CARD_ACCOUNTS = prebuilt(lambda _: select(*_ACCOUNT_COLUMNS)
                                    .where(_ACCOUNTS.c.gift_card_id.in_(bindparam("p_gift_card_ids", expanding=True)),
                                           _ACCOUNTS.c.kind == GIFT_CARD)
                                    .order_by(_ACCOUNTS.c.id)
                                    .with_for_update())


async def lock_gift_card_accounts(session: AsyncSession, gift_card_ids: Sequence[str]) -> list[Row]:
    """The gift cards' accounts, locked in id order (after the member's, see ``service.lock_gift_card_accounts``)."""
    return list((await session.execute(_LOCK_GIFT_CARD_ACCOUNTS(session),
                                       {"p_gift_card_ids": list(gift_card_ids)})).all())


_MEMBER_BALANCES = prebuilt(lambda _: select(_ACCOUNTS.c.kind, _ACCOUNTS.c.balance)
                            .where(_ACCOUNTS.c.member_id == bindparam("p_member_id")).order_by(_ACCOUNTS.c.id))


async def stored_value_held(session: AsyncSession) -> int:
    """What every wallet and gift card holds together (their positive balances), in minor units."""
    query = select(func.coalesce(func.sum(LedgerAccount.balance), 0)).where(
        LedgerAccount.kind.in_(sorted(STORED_VALUE_KINDS)), LedgerAccount.balance > 0)
    return int((await session.execute(query)).scalar_one())


async def stored_value_owed_back(session: AsyncSession) -> int:
    """What sales took from wallets and gift cards less what their returns and voids gave back: what voids and
    returns could still put back on them (a whole-ledger scan, for a currency change only)."""
    query = (select(func.coalesce(func.sum(-LedgerEntry.amount), 0))  # payments negative, refunds positive
             .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .where(LedgerAccount.kind.in_(sorted(STORED_VALUE_KINDS)),
                    LedgerEntry.kind.in_(["wallet_pay", "gift_card_pay", "return", "void"])))
    return max(int((await session.execute(query)).scalar_one()), 0)


async def member_balances(session: AsyncSession, member_id: str) -> list[tuple[str, int | None]]:
    """``(kind, balance)`` of each of the member's accounts, read from the table (never from the session)."""
    return [(kind, balance) for kind, balance in
            await fetch(session, _MEMBER_BALANCES(session), {"p_member_id": member_id})]


_ADD_TRANSACTION = prebuilt(lambda insert: insert(LedgerTransaction.__table__))
_ADD_ENTRIES = prebuilt(lambda insert: insert(LedgerEntry.__table__))


async def add_transaction(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_ADD_TRANSACTION(session), row)


async def add_entries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(_ADD_ENTRIES(session), list(rows))  # one executemany, whatever the count


_SET_BALANCE = prebuilt(lambda _: update(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("p_account_id"))
                        .values(balance=bindparam("p_balance")))


async def set_balances(session: AsyncSession, balances: dict[str, int]) -> None:
    """New cached balances by account id: one statement (an executemany), however many accounts moved."""
    if balances:
        await session.execute(_SET_BALANCE(session),
                              [{"p_account_id": k, "p_balance": v} for k, v in sorted(balances.items())])


_OPEN_LOTS = prebuilt(lambda _: select(*_LOT_COLUMNS)
                      .where(_LOTS.c.member_id == bindparam("p_member_id"), _OPEN)
                      .order_by(_LOTS.c.expires_at.asc().nulls_last(), _LOTS.c.id)
                      .offset(bindparam("p_offset", type_=Integer)).limit(bindparam("p_limit", type_=Integer)))
_OPEN_LOTS_OF = prebuilt(lambda _: select(*_LOT_COLUMNS)
                         .where(_LOTS.c.transaction_id.in_(bindparam("p_transaction_ids", expanding=True)),
                                _LOTS.c.member_id == bindparam("p_member_id"), _OPEN))
_LOTS_BY_ID = prebuilt(lambda _: select(*_LOT_COLUMNS).where(_LOTS.c.id.in_(bindparam("p_lot_ids", expanding=True))))


_FIRST_PAGE = 16  # open lots read at first by a debit; most debits need no more


def prefetch_lots_to_draw(session: AsyncSession, member_id: str) -> None:
    """Announce the first page that :func:`lots_to_draw` reads for the member (``db.prefetch``)."""
    prefetch(session, _OPEN_LOTS(session), {"p_member_id": member_id, "p_offset": 0, "p_limit": _FIRST_PAGE})


async def lots_to_draw(session: AsyncSession, member_id: str, amount: int, *,
                       prefer_transactions: Sequence[str] = ()) -> list[Row]:
    """The open lots (``_LOT_COLUMNS``) a debit of ``amount`` can draw from, in the order it draws (DESIGN §3):
    the lots of ``prefer_transactions`` (a clawback takes back the points its own transaction earned first), then
    the soonest-expiring, a page at a time until they cover ``amount``. A member's history of exhausted lots is
    never read (the partial index holds open lots only), nor open lots the debit will not reach."""
    found: dict[int, Row] = {}
    if prefer_transactions:
        found.update((lot.id, lot) for lot in (await session.execute(_OPEN_LOTS_OF(session), {
            "p_transaction_ids": list(prefer_transactions), "p_member_id": member_id})).all())
    covered, offset, page = sum(lot.remaining for lot in found.values()), 0, _FIRST_PAGE
    while covered < amount:
        lots = await fetch(session, _OPEN_LOTS(session),
                           {"p_member_id": member_id, "p_offset": offset, "p_limit": page})
        for lot in lots:
            if lot.id not in found:
                found[lot.id] = lot
                covered += lot.remaining
        if len(lots) < page:
            break
        offset, page = offset + page, page * 4
    return list(found.values())


async def lots_by_id(session: AsyncSession, lot_ids: Sequence[int]) -> list[Row]:
    if not lot_ids:
        return []
    return list((await session.execute(_LOTS_BY_ID(session), {"p_lot_ids": list(lot_ids)})).all())


async def outstanding_draws(session: AsyncSession, origin_ids: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(origin, lot_id, drawn minus restored)`` for the debits of the given ledger transactions."""
    if not origin_ids:
        return []
    query = (select(PointLotDraw.origin_transaction_id, PointLotDraw.lot_id, func.sum(PointLotDraw.amount))
             .where(PointLotDraw.origin_transaction_id.in_(list(origin_ids)))
             .group_by(PointLotDraw.origin_transaction_id, PointLotDraw.lot_id)
             .order_by(PointLotDraw.lot_id))
    return [(o, lot, int(n)) for o, lot, n in (await session.execute(query)).all() if n > 0]


async def points_expired_from(session: AsyncSession, transaction_id: str) -> int:
    """The points the expiry sweep has drawn from the lots ``transaction_id`` created: its lots
    (``ix_point_lots_transaction_id``), their draws (``ix_point_lot_draws_lot_id``), the draws' postings."""
    query = (select(func.coalesce(func.sum(PointLotDraw.amount), 0))
             .join(PointLot, PointLot.id == PointLotDraw.lot_id)
             .join(LedgerTransaction, LedgerTransaction.id == PointLotDraw.transaction_id)
             .where(PointLot.transaction_id == transaction_id, LedgerTransaction.kind == EXPIRY))
    return int((await session.execute(query)).scalar_one())


_ADD_LOTS = prebuilt(lambda insert: insert(_LOTS))
_ADD_DRAWS = prebuilt(lambda insert: insert(PointLotDraw.__table__))
_SET_LOT_REMAINING = prebuilt(lambda _: update(_LOTS).where(_LOTS.c.id == bindparam("p_lot_id"))
                              .values(remaining=bindparam("p_remaining")))


async def add_lots(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(_ADD_LOTS(session), list(rows))


async def set_lot_remaining(session: AsyncSession, changes: dict[int, int]) -> None:
    """What remains of each lot, by lot id: one statement (an executemany). Lots are only ever read as columns
    (never as ORM objects kept in the session), so nothing in the session goes stale."""
    if changes:
        await session.execute(_SET_LOT_REMAINING(session),
                              [{"p_lot_id": k, "p_remaining": v} for k, v in sorted(changes.items())])


async def add_draws(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(_ADD_DRAWS(session), list(rows))


@dataclass(frozen=True, slots=True)
class PostingWrites:
    """Everything one posting writes: its transaction row, its entries, the new balances by account id, and its
    lots' changes (what remains of each drawn lot by lot id, the draws, the new lots)."""

    transaction: dict[str, Any]
    entries: Sequence[dict[str, Any]]
    balances: dict[str, int]
    lot_remaining: dict[int, int]
    draws: Sequence[dict[str, Any]]
    lots: Sequence[dict[str, Any]]


# On PostgreSQL a posting is one statement, one round trip, whatever it moves: each write is a data-modifying
# CTE; the rows it inserts arrive as arrays (``unnest … WITH ORDINALITY``, so entries and lots get their ids in
# the order given), the balances and lots it updates as keyed parameters (``_keyed_update``). The CTEs see one
# snapshot and touch different rows; foreign keys between them (an entry's transaction, a new lot's
# transaction) are checked when the statement ends, after all of them have run.
_POST_TEMPLATE = """
WITH txn AS (
    INSERT INTO ledger_transactions (id, kind, member_id, store_id, reverses_id, reference, reason, created_at)
    VALUES (CAST(:id AS varchar), :kind, :member_id, :store_id, :reverses_id, :reference, :reason,
            CAST(:created_at AS timestamptz))
), entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount, kind, created_at)
    SELECT CAST(:id AS varchar), e.account_id, e.member_id, e.asset, e.amount, e.kind, CAST(:created_at AS timestamptz)
    FROM unnest(CAST(:e_account AS text[]), CAST(:e_member AS text[]), CAST(:e_asset AS text[]),
                CAST(:e_amount AS bigint[]), CAST(:e_kind AS text[]))
         WITH ORDINALITY AS e(account_id, member_id, asset, amount, kind, n)
    ORDER BY e.n
){balances}{remaining}, draws AS (
    INSERT INTO point_lot_draws (lot_id, transaction_id, origin_transaction_id, amount)
    SELECT d.lot_id, CAST(:id AS varchar), d.origin, d.amount
    FROM unnest(CAST(:d_lot AS bigint[]), CAST(:d_origin AS text[]), CAST(:d_amount AS bigint[]))
         WITH ORDINALITY AS d(lot_id, origin, amount, n)
    ORDER BY d.n
), lots AS (
    INSERT INTO point_lots (member_id, account_id, transaction_id, earned_at, expires_at, amount, remaining)
    SELECT l.member_id, l.account_id, CAST(:id AS varchar), l.earned_at, l.expires_at, l.amount, l.amount
    FROM unnest(CAST(:l_member AS text[]), CAST(:l_account AS text[]), CAST(:l_earned AS timestamptz[]),
                CAST(:l_expires AS timestamptz[]), CAST(:l_amount AS bigint[]))
         WITH ORDINALITY AS l(member_id, account_id, earned_at, expires_at, amount, n)
    ORDER BY l.n
)
SELECT 1
"""
_POSTINGS: dict[tuple[int, int], Any] = {}


def _slots(count: int) -> int:
    """How many keys a keyed update of ``count`` rows names: the next power of two (unused ones are NULL, which
    matches no row), so a handful of statement texts serve every posting."""
    return 0 if count == 0 else 1 << (count - 1).bit_length()


def _keyed_update(name: str, table: str, column: str, key_type: str, prefix: str, slots: int) -> str:
    """``UPDATE … SET column = CASE id WHEN key THEN value … END WHERE id IN (keys)``, the keys and values one
    parameter each. Its generic plan is as good as a custom one (an index look-up per key), so PostgreSQL keeps
    it; with the keys in an array (``FROM unnest(…)``) it guessed 10 rows per array and planned nearly every
    posting afresh, about 0.3 ms of its CPU each."""
    if not slots:
        return ""
    keys = [f"CAST(:{prefix}k{i} AS {key_type})" for i in range(slots)]
    cases = " ".join(f"WHEN {key} THEN CAST(:{prefix}v{i} AS bigint)" for i, key in enumerate(keys))
    return f", {name} AS (UPDATE {table} SET {column} = CASE id {cases} END WHERE id IN ({', '.join(keys)}))"


def _keyed_values(prefix: str, pairs: Sequence[tuple[Any, int]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for i in range(_slots(len(pairs))):
        key, value = pairs[i] if i < len(pairs) else (None, None)
        values[f"{prefix}k{i}"], values[f"{prefix}v{i}"] = key, value
    return values


def _posting_statement(accounts: int, lots: int):
    """The posting's statement for this many changed balances and lots (rounded up, ``_slots``)."""
    shape = (_slots(accounts), _slots(lots))
    statement = _POSTINGS.get(shape)
    if statement is None:
        statement = _POSTINGS[shape] = text(_POST_TEMPLATE.format(
            balances=_keyed_update("balances", "ledger_accounts", "balance", "varchar", "b_", shape[0]),
            remaining=_keyed_update("remaining", "point_lots", "remaining", "bigint", "r_", shape[1])))
    return statement


async def write_posting(session: AsyncSession, writes: PostingWrites) -> None:
    """Write a posting: one statement on PostgreSQL, one per table (each an executemany) elsewhere."""
    if dialect_of(session) != "postgresql":
        await add_transaction(session, writes.transaction)
        await add_entries(session, writes.entries)
        await set_lot_remaining(session, writes.lot_remaining)
        await add_draws(session, writes.draws)
        await add_lots(session, writes.lots)
        await set_balances(session, writes.balances)
        return
    txn, entries, draws, lots = writes.transaction, writes.entries, writes.draws, writes.lots
    if any(row["transaction_id"] != txn["id"] for row in (*entries, *draws, *lots)):
        raise ValueError("every row of a posting belongs to its transaction")
    balances, remaining = sorted(writes.balances.items()), sorted(writes.lot_remaining.items())
    # Sent on its own, not deferred into a batch. When its updates joined arrays (``FROM unnest(…)``), a batch of
    # many tables settled on a generic plan made while the tables were small (sequential scans of the accounts
    # and lots), and a commit grew slower as the tables grew: the CDNOW import fell from 148 to 117 purchases/s
    # over its run. Its keyed updates (``_keyed_update``) now plan as index look-ups; joining a batch is untried.
    await execute(session, _posting_statement(len(balances), len(remaining)), {
        **txn,
        **_keyed_values("b_", balances), **_keyed_values("r_", remaining),
        "e_account": [e["account_id"] for e in entries], "e_member": [e["member_id"] for e in entries],
        "e_asset": [e["asset"] for e in entries], "e_amount": [e["amount"] for e in entries],
        "e_kind": [e["kind"] for e in entries],
        "d_lot": [d["lot_id"] for d in draws], "d_origin": [d["origin_transaction_id"] for d in draws],
        "d_amount": [d["amount"] for d in draws],
        "l_member": [lot["member_id"] for lot in lots], "l_account": [lot["account_id"] for lot in lots],
        "l_earned": [lot["earned_at"] for lot in lots], "l_expires": [lot["expires_at"] for lot in lots],
        "l_amount": [lot["amount"] for lot in lots],
    })


async def program_side_net(session: AsyncSession, transaction_ids: Sequence[str]) -> list[tuple[str, str, int]]:
    """``(program account id, asset, net amount)`` over the given ledger transactions: what a reversal of all
    of them has to undo (the member side mirrors it)."""
    query = (select(LedgerEntry.account_id, LedgerEntry.asset, func.sum(LedgerEntry.amount))
             .where(LedgerEntry.transaction_id.in_(list(transaction_ids)),
                    LedgerEntry.account_id.startswith(PROGRAM_PREFIX, autoescape=True))
             .group_by(LedgerEntry.account_id, LedgerEntry.asset)
             .order_by(LedgerEntry.account_id))
    return [(a, asset, int(n)) for a, asset, n in (await session.execute(query)).all() if n != 0]


async def net_in_period(session: AsyncSession, account_ids: Sequence[str], start: datetime | None,
                        end: datetime) -> dict[str, int]:
    """``{account id: net amount}`` of the entries posted to these accounts in ``[start, end)`` (a report's
    read: it walks the accounts' entries by ``ix_ledger_entries_account_id``)."""
    query = (select(LedgerEntry.account_id, func.sum(LedgerEntry.amount))
             .where(LedgerEntry.account_id.in_(list(account_ids)), LedgerEntry.created_at < end)
             .group_by(LedgerEntry.account_id))
    if start is not None:
        query = query.where(LedgerEntry.created_at >= start)
    return {account: int(n) for account, n in (await session.execute(query)).all()}


async def gift_card_net(session: AsyncSession, transaction_ids: Sequence[str]) -> dict[str, int]:
    """``{gift card id: net amount}`` over the given ledger transactions, on the cards' own accounts."""
    query = (select(LedgerAccount.gift_card_id, func.sum(LedgerEntry.amount))
             .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .where(LedgerEntry.transaction_id.in_(list(transaction_ids)), LedgerAccount.kind == GIFT_CARD,
                    LedgerAccount.gift_card_id.is_not(None))
             .group_by(LedgerAccount.gift_card_id))
    return {card: int(n) for card, n in (await session.execute(query)).all() if n != 0}


async def members_with_expired_lots(session: AsyncSession, as_of: datetime, *, limit: int) -> list[str]:
    query = (select(PointLot.member_id).where(_OPEN, PointLot.expires_at <= as_of)
             .group_by(PointLot.member_id).order_by(PointLot.member_id).limit(limit))
    return list((await session.execute(query)).scalars())


async def expired_lots_of(session: AsyncSession, member_id: str, as_of: datetime) -> list[Row]:
    """The member's open lots past their expiry (``_LOT_COLUMNS``), by id."""
    query = (select(*_LOT_COLUMNS)
             .where(_LOTS.c.member_id == member_id, _OPEN, _LOTS.c.expires_at <= as_of)
             .order_by(_LOTS.c.id))
    return list((await session.execute(query)).all())


async def member_entries_page(session: AsyncSession, member_id: str, *, store_id: str | None, before: int | None,
                              limit: int) -> list[tuple[LedgerEntry, str, str | None]]:
    """The member's entries, newest first, with their account kind and the transaction's reason; only those of
    ``store_id``'s ledger transactions when given (entries of no store are then left out). Read by
    ``ix_ledger_entries_member_id_id``: a store's filter is checked on the transaction each entry joins, so a
    page costs the member's entries walked, never a scan of the table."""
    query = (select(LedgerEntry, LedgerAccount.kind, LedgerTransaction.reason)
             .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
             .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
             .where(LedgerEntry.member_id == member_id)
             .order_by(LedgerEntry.id.desc()).limit(limit))
    if store_id is not None:
        query = query.where(LedgerTransaction.store_id == store_id)
    if before is not None:
        query = query.where(LedgerEntry.id < before)
    return [(e, kind, reason) for e, kind, reason in (await session.execute(query)).all()]


def _upcoming_expiries_query():
    return (select(_LOTS.c.expires_at, func.sum(_LOTS.c.remaining).label("points"))
            .where(_LOTS.c.member_id == bindparam("p_member_id"), _OPEN,
                   _LOTS.c.expires_at.is_not(None),
                   bindparam("p_after", type_=UTCDateTime).is_(None)
                   | (_LOTS.c.expires_at > bindparam("p_after", type_=UTCDateTime)))
            .group_by(_LOTS.c.expires_at).order_by(_LOTS.c.expires_at)
            .limit(bindparam("p_limit", type_=Integer)))


_UPCOMING_EXPIRIES = prebuilt(lambda _: _upcoming_expiries_query())


async def upcoming_expiries(session: AsyncSession, member_id: str, *, after: datetime | None,
                            limit: int) -> list[tuple[datetime, int]]:
    """Points still held in lots that expire, by expiry time, soonest first (``after``: only later ones)."""
    rows = await fetch(session, _UPCOMING_EXPIRIES(session),
                       {"p_member_id": member_id, "p_after": after, "p_limit": limit})
    return [(at, int(n)) for at, n in rows]


def _holdings_query():
    """The member's balances, then their next expiries (as :data:`_UPCOMING_EXPIRIES`), in one statement: rows
    with a ``kind`` are balances, the others expiries."""
    expiries = _upcoming_expiries_query().subquery()
    return union_all(
        select(_ACCOUNTS.c.kind, _ACCOUNTS.c.balance, null().cast(UTCDateTime).label("expires_at"),
               null().cast(BigInteger).label("points"))
        .where(_ACCOUNTS.c.member_id == bindparam("p_member_id")),
        select(null().cast(String).label("kind"), null().cast(BigInteger).label("balance"), *expiries.c))


_HOLDINGS = prebuilt(lambda _: _holdings_query())


async def member_holdings(session: AsyncSession, member_id: str, *, after: datetime | None,
                          limit: int) -> tuple[list[tuple[str, int | None]], list[tuple[datetime, int]]]:
    """:func:`member_balances` and :func:`upcoming_expiries` in one statement."""
    rows = await fetch(session, _HOLDINGS(session), {"p_member_id": member_id, "p_after": after, "p_limit": limit})
    return ([(kind, balance) for kind, balance, _, _ in rows if kind is not None],
            sorted((at, int(n)) for kind, _, at, n in rows if kind is None))  # a union keeps no order


def prefetch_holdings(session: AsyncSession, member_id: str, *, after: datetime | None, limit: int) -> None:
    """Announce :func:`member_holdings`' read (``db.prefetch``)."""
    prefetch(session, _HOLDINGS(session), {"p_member_id": member_id, "p_after": after, "p_limit": limit})


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


async def lots_off_their_draws(session: AsyncSession, limit: int) -> list[tuple[int, int, int, int]]:
    """Lots whose ``remaining`` is not their ``amount`` less what was drawn from them (a burn, expiry or claw-back
    draws; a void or return that gives burned points back draws a negative amount): what a debit that updated
    the wrong lot would leave, with the account's total still right."""
    drawn = (select(PointLotDraw.lot_id, func.sum(PointLotDraw.amount).label("drawn"))
             .group_by(PointLotDraw.lot_id).subquery())
    drawn_total = func.coalesce(drawn.c.drawn, literal(0))
    query = (select(PointLot.id, PointLot.amount, PointLot.remaining, drawn_total)
             .outerjoin(drawn, drawn.c.lot_id == PointLot.id)
             .where(PointLot.remaining != PointLot.amount - drawn_total).limit(limit))
    return [(int(i), int(a), int(r), int(d)) for i, a, r, d in (await session.execute(query)).all()]


async def entries_of_another_member(session: AsyncSession, limit: int) -> list[tuple[str, int, str | None]]:
    """Entries and lots filed under another member than their account's (a statement would show them to the
    wrong member): ``("entry", id, member)`` or ``("lot", id, member)``."""
    found = []
    for what, table in (("entry", LedgerEntry), ("lot", PointLot)):
        query = (select(table.id, table.member_id).join(LedgerAccount, LedgerAccount.id == table.account_id)
                 .where(table.member_id.is_distinct_from(LedgerAccount.member_id)).limit(limit))
        found.extend((what, int(i), m) for i, m in (await session.execute(query)).all())
    return found[:limit]


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
