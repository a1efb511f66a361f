"""The one writer of the ledger: accounts, transactions, entries, lots and lot draws (DESIGN §3).

Callers lock the member's accounts with :func:`lock_accounts` (then any gift cards' with
:func:`lock_gift_card_accounts`), decide what moves with their own ``rules``, and hand the movements to
:func:`post`, which writes one balanced ledger transaction, keeps the lots equal to the balance, and updates the
cached balances of the locked accounts. Nothing else writes these tables; entries are only ever inserted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.ids import new_id
from service.ledger import repository, rules
from service.ledger.errors import InsufficientFunds, InsufficientPoints, InvalidPosting
from service.ledger.rules import GIFT_CARD, POINTS, LotPolicy, Movement, gift_card_key

# The program's own accounts: they take the other side of every movement and keep no balance row.
PROGRAM_ACCOUNTS: dict[str, str] = {
    "program:points_issued": POINTS,
    "program:points_redeemed": POINTS,
    "program:points_expired": POINTS,
    "program:points_adjusted": POINTS,
    # Stored value: each wallet part is its own asset, so a reversal returns every amount to the part it left.
    "program:stored_value_received": "wallet_cash",
    "program:stored_value_spent": "wallet_cash",
    "program:stored_value_refunded": "wallet_cash",
    "program:bonus_granted": "wallet_bonus",
    "program:bonus_spent": "wallet_bonus",
    "program:bonus_forfeited": "wallet_bonus",
    # Gift cards: one asset for every card; a card's account takes the owner's side.
    "program:gift_cards_issued": GIFT_CARD,
    "program:gift_cards_spent": GIFT_CARD,
}
# Member account kinds and the asset each holds.
MEMBER_ACCOUNT_ASSETS: dict[str, str] = {POINTS: POINTS, "wallet_cash": "wallet_cash", "wallet_bonus": "wallet_bonus"}
# Punch-card stamps: the member's ``stamps:<program id>`` holds the asset of that name, against the program's
# ``program:stamps:<program id>``.
STAMPS_PREFIX = "stamps:"


def member_asset(kind: str) -> str:
    """The asset a member account of this kind holds."""
    return kind if kind.startswith(STAMPS_PREFIX) else MEMBER_ACCOUNT_ASSETS[kind]


def program_asset(account_id: str) -> str | None:
    """The asset of one of the program's own accounts (None: not a program account)."""
    if account_id.startswith(f"program:{STAMPS_PREFIX}"):
        return account_id.removeprefix("program:")
    return PROGRAM_ACCOUNTS.get(account_id)


async def ensure_stamp_account(session: AsyncSession, program_id: str, now: datetime) -> None:
    """The program's side of a punch card's stamps (created with the punch-card program)."""
    account_id = f"program:{STAMPS_PREFIX}{program_id}"
    await repository.ensure_accounts(session, [{"id": account_id, "kind": account_id,
                                                "asset": program_asset(account_id), "member_id": None,
                                                "balance": None, "created_at": now}])


async def ensure_program_accounts(session: AsyncSession, now: datetime) -> None:
    await repository.ensure_accounts(session, [
        {"id": account_id, "kind": account_id, "asset": asset, "member_id": None, "balance": None, "created_at": now}
        for account_id, asset in PROGRAM_ACCOUNTS.items()
    ])


@dataclass(slots=True)
class Account:
    """A locked account as the ledger keeps it for the rest of the transaction: read once under the lock, its
    ``balance`` kept current by :func:`post` (which writes it to the table). Not an ORM object: nothing is
    flushed through the session."""

    id: str
    kind: str
    asset: str
    member_id: str | None
    gift_card_id: str | None
    balance: int | None


@dataclass
class LockedAccounts:
    """Accounts locked for the rest of the database transaction: a member's, by kind, and any gift cards', by
    :func:`~service.ledger.rules.gift_card_key`. ``member_id`` is None when only gift cards are locked."""

    member_id: str | None
    by_kind: dict[str, Account]

    def balance(self, kind: str) -> int:
        account = self.by_kind.get(kind)
        return int(account.balance or 0) if account else 0


async def lock_accounts(session: AsyncSession, member_id: str, kinds: Sequence[str], now: datetime) -> LockedAccounts:
    """Create the member's accounts of these kinds if missing, then lock them (in a fixed order). Every write to
    a member's balance happens under this lock, so concurrent commits for one member run one after another."""
    kinds = sorted(set(kinds))
    accounts = await repository.lock_member_accounts(session, member_id, kinds)
    missing = set(kinds) - {a.kind for a in accounts}
    if missing:  # first use of these kinds: create them (a concurrent creator's rows are kept), lock all again
        await repository.ensure_accounts(session, _member_accounts(member_id, missing, now))
        # Without waiting: the accounts locked above are held, and one that another transaction created meanwhile
        # may sort before them. That transaction locks in id order, so it may hold the new account while waiting
        # for ours: rather than a deadlock (found after a second), this request fails at once and is rerun from
        # the start by the unit of work, when every account exists and the one order holds.
        accounts = await repository.lock_member_accounts(session, member_id, kinds, nowait=True)
    return LockedAccounts(member_id, {a.kind: Account(*a) for a in accounts})


async def lock_accounts_if_free(session: AsyncSession, member_id: str, kinds: Sequence[str]) -> LockedAccounts | None:
    """The member's accounts of these kinds, locked, if they exist and no other transaction holds one of them
    (``FOR UPDATE SKIP LOCKED``); None otherwise, without waiting. For work over many members in one
    transaction (the expiry sweep): it holds the members it has done while it goes on, and a sale holding the
    next one's accounts may be waiting for one of those (a referred member's first sale locks the referrer's),
    so waiting for it could close a cycle."""
    kinds = sorted(set(kinds))
    accounts = await repository.lock_member_accounts(session, member_id, kinds, skip_locked=True)
    if len(accounts) < len(kinds):
        return None
    return LockedAccounts(member_id, {a.kind: Account(*a) for a in accounts})


async def open_accounts(session: AsyncSession, member_id: str, kinds: Sequence[str], now: datetime) -> None:
    """Create a new member's accounts of these kinds with the member, in the enrolment's own round trips (the
    insert joins the session's next statement): the member's first sale then finds and locks them in one
    statement, instead of creating them under its locks (:func:`lock_accounts` still creates any missing)."""
    await repository.open_accounts(session, _member_accounts(member_id, kinds, now))


def _member_accounts(member_id: str, kinds: Iterable[str], now: datetime) -> list[dict[str, Any]]:
    return [{"id": new_id("acc"), "kind": kind, "asset": member_asset(kind), "member_id": member_id, "balance": 0,
             "created_at": now} for kind in sorted(set(kinds))]


async def lock_gift_card_accounts(session: AsyncSession, gift_card_ids: Sequence[str], now: datetime,
                                  into: LockedAccounts | None = None) -> LockedAccounts:
    """Create the gift cards' accounts if missing, then lock them (in account id order), adding them to ``into``
    (a member's locked accounts) or to a new set. Lock order, everywhere: the member's accounts first (then a
    referrer's), then the gift cards', then vouchers and campaigns, so that commits, voids and returns touching
    several can never wait on each other in a cycle."""
    accounts = into or LockedAccounts(None, {})
    ids = sorted(set(gift_card_ids))
    if not ids:
        return accounts
    await repository.ensure_accounts(session, [
        {"id": new_id("acc"), "kind": GIFT_CARD, "asset": GIFT_CARD, "gift_card_id": gift_card_id, "balance": 0,
         "created_at": now} for gift_card_id in ids])
    for account in await repository.lock_gift_card_accounts(session, ids):
        accounts.by_kind[gift_card_key(account.gift_card_id)] = Account(*account)
    return accounts


def _by_kind(rows) -> dict[str, int]:
    return {kind: int(balance or 0) for kind, balance in rows}


async def balances(session: AsyncSession, member_id: str) -> dict[str, int]:
    """The member's cached balances by account kind (read without a lock: for display, not for decisions)."""
    return _by_kind(await repository.member_balances(session, member_id))


async def stored_value_held(session: AsyncSession) -> int:
    """What every wallet and gift card holds together, in minor units of the program's currency."""
    return await repository.stored_value_held(session)


async def stored_value_owed_back(session: AsyncSession) -> int:
    """What voids and returns of sales could still give back to wallets and gift cards, in minor units."""
    return await repository.stored_value_owed_back(session)


async def holdings(session: AsyncSession, member_id: str, *, expiring_after: datetime,
                   expiring_limit: int) -> tuple[dict[str, int], list[tuple[datetime, int]]]:
    """:func:`balances` and :func:`expiring_points` (after ``expiring_after``) in one statement, for the quote."""
    balances, expiring = await repository.member_holdings(session, member_id, after=expiring_after,
                                                          limit=expiring_limit)
    return _by_kind(balances), expiring


def prefetch_draw(session: AsyncSession, member_id: str) -> None:
    """Announce the member's open lots that a points debit draws from first (``db.prefetch``), for a commit that
    will burn points: under the member's lock (:func:`lock_accounts`) the lots change only through this
    transaction's posting, so they read the same at any moment before it."""
    repository.prefetch_lots_to_draw(session, member_id)


def prefetch_holdings(session: AsyncSession, member_id: str, *, expiring_after: datetime,
                      expiring_limit: int) -> None:
    """Announce :func:`holdings`' read (``db.prefetch``: it goes out with the request's other announced reads)."""
    repository.prefetch_holdings(session, member_id, after=expiring_after, limit=expiring_limit)


async def program_net(session: AsyncSession, transaction_ids: Sequence[str]) -> dict[str, int]:
    """``{program account: net amount}`` over the given ledger transactions (what they moved on the program's
    side; the member's side is the opposite)."""
    ids = [i for i in transaction_ids if i]
    if not ids:
        return {}
    return {account: net for account, _, net in await repository.program_side_net(session, ids)}


async def program_flows(session: AsyncSession, accounts: Sequence[str], start: datetime | None,
                        end: datetime) -> dict[str, int]:
    """``{program account: net amount}`` each of these program accounts received in ``[start, end)``, by the
    entries' posting time (when the ledger recorded them: a back-dated sale counts when it was committed)."""
    if unknown := [a for a in accounts if program_asset(a) is None]:
        raise ValueError(f"not the program's accounts: {unknown}")
    return await repository.net_in_period(session, accounts, start, end)


async def gift_card_net(session: AsyncSession, transaction_ids: Sequence[str]) -> dict[str, int]:
    """``{gift card id: net amount}`` the given ledger transactions moved on each gift card's account."""
    ids = [i for i in transaction_ids if i]
    return await repository.gift_card_net(session, ids) if ids else {}


async def expiring_points(session: AsyncSession, member_id: str, *, after: datetime | None,
                          limit: int) -> list[tuple[datetime, int]]:
    """``(expires_at, points)`` still held in the member's lots, soonest first."""
    return await repository.upcoming_expiries(session, member_id, after=after, limit=limit)


@dataclass(frozen=True, slots=True)
class Posting:
    kind: str
    member_id: str | None
    at: datetime
    movements: tuple[Movement, ...]
    store_id: str | None = None
    reference: str | None = None
    reverses_id: str | None = None
    reason: str | None = None


async def post(session: AsyncSession, posting: Posting, accounts: LockedAccounts) -> str:
    """Write ``posting`` as one ledger transaction; returns its id. ``accounts`` must be locked by the caller
    and is updated in place with the new balances."""
    if accounts.member_id != posting.member_id:
        raise InvalidPosting(f"posting for {posting.member_id} with the accounts of {accounts.member_id}")
    for movement in posting.movements:
        if program_asset(movement.contra) != movement.asset or movement.account not in accounts.by_kind:
            raise InvalidPosting(f"movement {movement.kind}: {movement.account} -> {movement.contra} is not a "
                                 "locked account against a program account of the same asset")
    transaction_id = new_id("ltx")
    legs = [leg for movement in posting.movements for leg in rules.legs(movement)]
    problems = rules.unbalanced_assets((leg.asset, leg.amount) for leg in legs)
    if problems:
        raise InvalidPosting(f"posting {posting.kind} does not balance: {problems}")

    book = await _load_lots(session, posting, accounts)
    balances = {kind: accounts.balance(kind) for kind in accounts.by_kind}
    rows = []
    for movement in posting.movements:
        account = accounts.by_kind[movement.account]
        before = balances[movement.account]
        after = before + movement.amount
        if movement.amount < 0 and after < 0 and not movement.allow_negative:
            if movement.asset == POINTS:
                raise InsufficientPoints(f"The member has {before} points; {-movement.amount} are needed.",
                                         balance=before)
            raise InsufficientFunds(f"The balance is {before}; {-movement.amount} is needed.", balance=before)
        if after < 0 and account.kind in rules.STORED_VALUE_KINDS:
            raise InsufficientFunds(f"The balance is {before}; {-movement.amount} is needed.", balance=before)
        if book is not None and movement.lots is not LotPolicy.NONE:
            book.apply(movement, before)
        balances[movement.account] = after
        rows.append({"transaction_id": transaction_id, "account_id": account.id, "member_id": account.member_id,
                     "asset": movement.asset, "amount": movement.amount, "kind": movement.kind,
                     "created_at": posting.at})
        rows.append({"transaction_id": transaction_id, "account_id": movement.contra, "member_id": None,
                     "asset": movement.asset, "amount": -movement.amount, "kind": movement.kind,
                     "created_at": posting.at})
    changed = [(accounts.by_kind[kind], balance) for kind, balance in balances.items()
               if balance != accounts.by_kind[kind].balance]
    lot_remaining, draws, lots = ({}, [], []) if book is None else _lot_writes(
        book, posting, transaction_id, accounts.by_kind[POINTS].id)
    await repository.write_posting(session, repository.PostingWrites(
        transaction={"id": transaction_id, "kind": posting.kind, "member_id": posting.member_id,
                     "store_id": posting.store_id, "reverses_id": posting.reverses_id,
                     "reference": posting.reference, "reason": posting.reason, "created_at": posting.at},
        entries=[r for r in rows if r["amount"] != 0],
        balances={account.id: balance for account, balance in changed},
        lot_remaining=lot_remaining, draws=draws, lots=lots,
    ))
    for account, balance in changed:
        account.balance = balance
    return transaction_id


async def _load_lots(session: AsyncSession, posting: Posting, accounts: LockedAccounts) -> rules.LotBook | None:
    moves = [m for m in posting.movements if m.lots is not LotPolicy.NONE]
    if not moves:
        return None
    drawing = [m for m in moves if m.lots in (LotPolicy.FIFO, LotPolicy.CLAWBACK) and m.amount < 0]
    lots = {}
    if drawing:
        prefer = sorted({m.origin for m in drawing if m.lots is LotPolicy.CLAWBACK and m.origin})
        drawn = await repository.lots_to_draw(session, posting.member_id, sum(-m.amount for m in drawing),
                                              prefer_transactions=prefer)
        lots = {lot.id: lot for lot in drawn}
    origins = sorted({m.origin for m in moves if m.lots is LotPolicy.RESTORE and m.origin})
    outstanding = await repository.outstanding_draws(session, origins)
    specific = [i for m in moves if m.lots is LotPolicy.SPECIFIC for i in m.lot_ids]
    missing = sorted({lot_id for _, lot_id, _ in outstanding} | set(specific) - set(lots))
    for lot in await repository.lots_by_id(session, missing):
        lots[lot.id] = lot
    return rules.LotBook(
        {lot_id: rules.Lot(lot_id, lot.expires_at, lot.remaining, lot.transaction_id)
         for lot_id, lot in lots.items() if lot_id is not None},
        outstanding=outstanding)


def _lot_writes(book: rules.LotBook, posting: Posting, transaction_id: str,
                account_id: str) -> tuple[dict[int, int], list[dict], list[dict]]:
    """What the posting does to the member's lots: what remains of each drawn lot, the draws, the new lots."""
    draws = [{"lot_id": d.lot_id, "transaction_id": transaction_id, "origin_transaction_id": d.origin or transaction_id,
              "amount": d.amount} for d in book.draws]
    lots = [{"member_id": posting.member_id, "account_id": account_id, "transaction_id": transaction_id,
             "earned_at": n.earned_at or posting.at, "expires_at": n.expires_at, "amount": n.amount,
             "remaining": n.amount} for n in book.new_lots]
    return book.remaining_changes(), draws, lots


async def points_expired_from(session: AsyncSession, transaction_id: str) -> int:
    """The points the expiry sweep took from the lots the ledger transaction created (a sale's, a bonus's)."""
    return await repository.points_expired_from(session, transaction_id)


async def reversal_movements(session: AsyncSession, transaction_ids: Sequence[str], *, kind: str,
                             origin: str, assets: Sequence[str] | None = None) -> tuple[Movement, ...]:
    """The movements that undo everything the given ledger transactions still hold in ``assets``, one per program
    account: points that were earned are clawed back (the balance may go negative), points that were burned go
    back to the very lots they came from. What the sweep already expired from the lots ``origin`` created is not
    clawed back again: the member lost those points once."""
    assets = tuple(MEMBER_ACCOUNT_ASSETS.values()) if assets is None else assets  # stamps are the punch cards' own
    movements = []
    expired: int | None = None
    for account_id, asset, net in await repository.program_side_net(session, transaction_ids):
        if asset not in assets:
            continue
        member_amount = net  # the member's side of that account's movements was -net; reversing it is +net
        if asset == POINTS and member_amount < 0:
            if expired is None:
                expired = await repository.points_expired_from(session, origin)
            gone = min(expired, -member_amount)
            member_amount, expired = member_amount + gone, expired - gone
            if member_amount == 0:
                continue
        member_kind = next(k for k, a in MEMBER_ACCOUNT_ASSETS.items() if a == asset)
        policy = LotPolicy.NONE
        if asset == POINTS:
            policy = LotPolicy.RESTORE if member_amount > 0 else LotPolicy.CLAWBACK
        movements.append(Movement(account=member_kind, asset=asset, amount=member_amount, contra=account_id,
                                  kind=kind, lots=policy, allow_negative=True, origin=origin))
    return tuple(movements)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    transactions: int
    entries: int
    accounts: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession, *, limit: int = 50) -> VerifyReport:
    """Check every invariant of DESIGN §3 over the whole ledger."""
    problems: list[str] = []
    for txn, asset, total in await repository.unbalanced_transactions(session, limit):
        problems.append(f"ledger transaction {txn} does not balance in {asset}: its entries sum to {total}")
    for account, balance, total in await repository.balance_mismatches(session, limit):
        problems.append(f"account {account} has balance {balance} but its entries sum to {total}")
    for account, balance in await repository.negative_stored_value(session, sorted(rules.STORED_VALUE_KINDS), limit):
        problems.append(f"stored-value account {account} is negative: {balance}")
    for account, balance, held in await repository.lot_mismatches(session, limit):
        problems.append(f"points account {account} has balance {balance} but its open lots hold {held}")
    for lot, amount, remaining, drawn in await repository.lots_off_their_draws(session, limit):
        problems.append(f"point lot {lot} of {amount} has {remaining} remaining but {drawn} was drawn from it")
    for what, key, member in await repository.entries_of_another_member(session, limit):
        problems.append(f"{what} {key} is filed under member {member}, not its account's member")
    for entry in await repository.orphan_entries(session, limit):
        problems.append(f"entry {entry} belongs to no ledger transaction")
    for entry in await repository.asset_mismatches(session, limit):
        problems.append(f"entry {entry} is in another asset than its account")
    transactions, entries, accounts = await repository.counts(session)
    return VerifyReport(transactions, entries, accounts, tuple(problems))
