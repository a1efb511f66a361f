"""Gift cards: issue (admin), check a balance with the PIN, and what checkout asks of them: the cards a basket
is paid with, each checked against its PIN under the limits on wrong PINs. Balances move only through
:mod:`service.ledger.service`; spending at the till is the checkout's ``GiftCardTender``. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service import ratelimit
from service.audit import record as audit
from service.auth.rules import Principal
from service.clock import Clock
from service.db import Database
from service.errors import RateLimited
from service.giftcards import repository, rules
from service.giftcards.errors import GiftCardLocked, GiftCardNotFound, GiftCardsNotConfigured, WrongGiftCardPin
from service.giftcards.models import GiftCard
from service.giftcards.schemas import GiftCardIssue, GiftCardIssued, GiftCardPublic
from service.ids import new_id, random_code
from service.ledger import service as ledger
from service.ledger.rules import GIFT_CARD, Movement, gift_card_key
from service.program import service as program_service

CODE_ATTEMPTS = 3  # a code that collides with an existing one (odds ~2^-60) is drawn again


@dataclass(frozen=True, slots=True)
class PinGuard:
    """What checking a PIN needs besides the request's session: the secret key PINs are hashed with, and the
    database its tries are counted in (transactions of their own, see :mod:`service.ratelimit`)."""

    pin_key: str | None
    db: Database

    def key(self) -> str:
        return require_pin_key(self.pin_key)


def require_pin_key(pin_key: str | None) -> str:
    if not pin_key:
        raise GiftCardsNotConfigured("Gift cards need LOYALTY_GIFT_CARD_PIN_KEY (a secret of at least 32 "
                                     "characters) in the service's environment.")
    return pin_key


@dataclass(frozen=True, slots=True)
class Claim:
    """A card handed over: its code and PIN as typed, and the amount asked of it (None: what it holds)."""

    code: str
    pin: str
    amount: int | None = None


async def issue(session: AsyncSession, body: GiftCardIssue, guard: PinGuard, principal: Principal,
                clock: Clock) -> list[GiftCardIssued]:
    """``count`` cards of ``amount`` each: one ledger transaction loads them all. The PINs are in this answer only
    (stored hashed; the idempotency record keeps the answer without them, see ``routes.KEPT_ANSWER``)."""
    key = guard.key()
    program = await program_service.get(session)
    now = clock.now()
    pins = {}
    for attempt in range(1, CODE_ATTEMPTS + 1):
        rows = []
        for _ in range(body.count):
            card_id = new_id("gft")
            pins[card_id] = pin = rules.card_pin(key, card_id)
            rows.append({"id": card_id, "code": random_code(), "pin_hash": rules.hash_pin(key, card_id, pin),
                         "currency": program.currency, "initial_amount": body.amount, "issued_at": now,
                         "issued_by": principal.key_id})
        try:
            async with session.begin_nested():
                await repository.add_all(session, rows)
            break
        except IntegrityError:
            if attempt == CODE_ATTEMPTS:
                raise
    ids = [row["id"] for row in rows]
    accounts = await ledger.lock_gift_card_accounts(session, ids, now)
    await ledger.post(session, ledger.Posting(
        kind="gift_card_issue", member_id=None, at=now, reference=ids[0] if len(ids) == 1 else None,
        movements=tuple(Movement(account=gift_card_key(i), asset=GIFT_CARD, amount=body.amount,
                                 contra=rules.ISSUED, kind="issue") for i in ids)), accounts)
    await audit(session, clock, actor=principal.key_id, action="gift_cards.issued", target=ids[0],
                data={"amount": body.amount, "count": body.count, "ids": ids})
    return [GiftCardIssued(id=row["id"], code=row["code"], pin=pins[row["id"]], balance=body.amount,
                           currency=program.currency) for row in rows]


async def get(session: AsyncSession, code: str, pin: str, guard: PinGuard, principal: Principal,
              clock: Clock) -> GiftCardPublic:
    (card,) = await redeemable([Claim(code, pin)], guard, principal, clock.now())
    balance = (await repository.balances(session, [card.id])).get(card.id, 0)
    return GiftCardPublic(id=card.id, balance=balance, currency=card.currency, status=rules.status(balance))


async def redeemable(claims: Sequence[Claim], guard: PinGuard, principal: Principal,
                     now: datetime) -> list[GiftCard]:
    """The cards of ``claims``, in their order, once each code is known and each PIN right, within the limits:
    429 ``rate_limited`` when the key got too many codes or PINs wrong lately, 409 ``gift_card_locked`` for a
    card with too many wrong PINs in the past hour (checked before its PIN, so a locked card tells nothing),
    404 ``gift_card_not_found``, 422 ``gift_card_pin_invalid``.

    A PIN is counted as a failure of its card *before* it is tried (``ratelimit.try_once``), and released when
    it proves right: a burst of guesses at once gets no more tries at a card than its limit allows (more tries
    of one card at the same instant than that are refused, right or wrong). The key's failures are counted once
    known, as voucher codes are (``ratelimit.Guard``): no more are answered than its limit, and an app backend
    checking many cards at once is never refused for trying them together.

    Every statement runs on a short session of its own, one after another: call it before the request's session
    runs its first. A request that held a connection while it waited for another could exhaust the pool under a
    burst (every request holding one, waiting for a second); and on SQLite a transaction that will write holds
    the others off from its first statement."""
    key = guard.key()
    async with guard.db.statements(write=False) as reading:
        cards = await repository.by_codes(reading, [c.code for c in claims])
    by_key = (rules.LOOKUP_PER_KEY, principal.key_id)
    key_failures = ratelimit.Guard(guard.db, rules.LOOKUP_PER_KEY, principal.key_id)
    found = []
    for claim in claims:
        card = cards.get(claim.code)
        per_card = [] if card is None else [(rules.PIN_PER_CARD, card.id)]
        tried = await ratelimit.try_once(guard.db, per_card, now, checks=[by_key])
        if tried.refused == (rules.LOOKUP_PER_KEY.scope, principal.key_id):
            _key_limited(tried.decisions[tried.refused])
        if tried.refused is not None:
            seconds = tried.decisions[tried.refused].retry_after_seconds
            raise GiftCardLocked(
                f"The gift card {rules.label(card.code)} is locked after {rules.PIN_PER_CARD.max_failures} wrong "
                f"PINs; it can be used again in {-(-seconds // 60)} minutes.",
                headers={"Retry-After": str(seconds)}, retry_after=seconds)
        if card is None or not rules.pin_matches(key, card.id, claim.pin, card.pin_hash):
            standing = await key_failures.fail(now)
            if standing.failures > rules.LOOKUP_PER_KEY.max_failures:  # failed together past the limit
                _key_limited(standing)
            if card is None:
                raise GiftCardNotFound(f"There is no gift card {claim.code!r}; check the code.")
            left = tried.decisions[(rules.PIN_PER_CARD.scope, card.id)].remaining
            then = (f"{left} more wrong PIN{'s' if left != 1 else ''} lock it for up to an hour" if left else
                    "it is now locked for up to an hour")
            raise WrongGiftCardPin(f"Wrong PIN for the gift card {rules.label(card.code)}; {then}.",
                                   attempts_left=left)
        await ratelimit.release(guard.db, tried)
        found.append(card)
    return found


def _key_limited(decision: ratelimit.Decision) -> None:
    seconds = decision.retry_after_seconds
    raise RateLimited(f"Too many wrong gift card codes or PINs from this key; try again in {seconds} seconds.",
                      headers={"Retry-After": str(seconds)}, retry_after=seconds)


async def outstanding(session: AsyncSession) -> tuple[int, int]:
    """``(total, count)`` of the balances the gift cards still hold, from the ledger."""
    return await repository.outstanding(session)


async def balances(session: AsyncSession, gift_card_ids: Sequence[str]) -> dict[str, int]:
    """The cards' balances, read without a lock (a quote's; a commit reads them under the accounts' lock)."""
    return await repository.balances(session, gift_card_ids)

