"""Idempotency keys: one mechanism for every POST that moves a balance (API.md "Conventions").

The business work runs in the request's unit of work, and the answer is written into the key's record *in that
same transaction*: the effect and the remembered answer commit together or not at all. While it runs, the key is
held so that a concurrent duplicate is refused at once:

- on PostgreSQL by a transaction-scoped advisory lock on the key, taken by the request's first statement together
  with a look for the key's record (``KeyLock``, sent by ``db.guard``: no round trip or transaction of its own).
  The key's record is inserted only with the answer, and its unique index has the last word: a duplicate that
  took the lock just after the first request committed, on a snapshot from before, fails at that insert, rolls
  back whole and is answered from the first one's record. A request whose process dies loses its lock with its
  connection, so its retry runs at once;
- on SQLite (one writer at a time) by a record *claimed* in a short transaction of its own before the work, and
  completed with the answer (``Claim``). A key met before takes this way on PostgreSQL too.

- same key, same body, finished: the first response is replayed (``Idempotent-Replayed: true``);
- same key, another body: 409 ``idempotency_key_reused``;
- same key while the first is running: 409 ``request_in_progress`` (with a KeyLock whatever the body: the running
  request's body is not known until its answer is written). A claimed record older than
  ``idempotency_lock_seconds`` belongs to a process that died; the next retry takes it over (and the old
  process, if it was only slow, finds its claim gone and rolls back);
- answers with a 4xx status are remembered and replayed too (the same question gets the same answer), a
  KeyLock's after its work rolled back, under the key's lock taken again; a 5xx releases the key so that a retry
  runs again;
- records are kept ``idempotency_ttl_days`` (at least 7) and then purged by ``loyalty sweep``.

The key is scoped to the API key that sent it; the body is compared after JSON canonicalization (key order
and white space do not matter).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import Index, LargeBinary, bindparam, delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from service import db as db_
from service.db import Database, UTCDateTime, execute, fetch, prebuilt
from service.errors import Conflict, ServiceError

HEADER = "Idempotency-Key"


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("ux_idempotency_keys_scope", "api_key_id", "key", unique=True),
        # Only answers that hold personal data name a subject: the index costs the other requests nothing.
        Index("ix_idempotency_keys_subject", "subject", postgresql_where=text("subject IS NOT NULL"),
              sqlite_where=text("subject IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    api_key_id: str = Field(max_length=32)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    status: str = Field(max_length=12)  # in_progress | completed
    response_status: int | None = None
    response_body: bytes | None = Field(default=None, sa_type=LargeBinary)
    response_type: str | None = Field(default=None, max_length=64)
    locked_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    # The member whose personal data the answer holds (an enrolment's), so that erasing them scrubs it.
    subject: str | None = Field(default=None, max_length=32)


class IdempotencyKeyRequired(ServiceError):
    status, code, title = 400, "idempotency_key_required", "Idempotency-Key header required"


class InvalidIdempotencyKey(ServiceError):
    status, code, title = 400, "invalid_idempotency_key", "Invalid Idempotency-Key header"


class IdempotencyKeyReused(Conflict):
    code, title = "idempotency_key_reused", "Idempotency key already used for another request"


class RequestInProgress(Conflict):
    code, title = "request_in_progress", "A request with this idempotency key is still running"


class KnownKey(Exception):
    """The key has a record, or got one while this request ran: answer as :func:`claim` says."""


class KeyBusy(Exception):
    """Another transaction holds the key's lock: the first request with it is running. Not a ServiceError, so that
    no domain code that handles its own errors takes it for one: the route answers it with
    :func:`still_running`."""


def still_running() -> RequestInProgress:
    return RequestInProgress("The first request with this Idempotency-Key is still being processed; retry in a "
                             "moment.", headers={"Retry-After": "1"})


@dataclass(frozen=True, slots=True)
class Claim:
    """A key held by its record, claimed before the work (SQLite, or a key met before)."""

    record_id: int
    locked_at: datetime


@dataclass(frozen=True, slots=True)
class KeyLock:
    """A new key on PostgreSQL, held by an advisory lock in the request's transaction (see :func:`hold`); its
    record is written with the answer."""

    api_key_id: str
    key: str
    request_hash: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: bytes
    media_type: str


def validate_key(key: str | None, *, required: bool) -> str | None:
    if key is None:
        if required:
            raise IdempotencyKeyRequired(f"This request moves a balance: send an {HEADER} header (1-255 "
                                         "printable characters, new for each distinct request).")
        return None
    if not 1 <= len(key) <= 255 or not all(" " <= ch <= "~" for ch in key):
        raise InvalidIdempotencyKey(f"{HEADER} must be 1-255 printable ASCII characters.")
    return key


def request_hash(method: str, path: str, body: bytes) -> str:
    """The request as its key remembers it: the body's JSON with its keys sorted (so key order and spacing do not
    make a retry a new request), or the bytes as sent when they are not JSON orjson can write again (not JSON at
    all, or nested past orjson's 254 levels for writing, though it reads 1,023: such a body answered 500 before
    the schema could refuse it)."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


_TABLE = IdempotencyRecord.__table__


# INSERT … ON CONFLICT DO NOTHING RETURNING id: the unique key decides, in one statement (a claim, or an answer
# written on its own after the request's work was rolled back).
_CLAIM = prebuilt(lambda insert: insert(_TABLE).on_conflict_do_nothing().returning(_TABLE.c.id))
# The answer of a request that held its key by a KeyLock: a plain insert, refused by the unique key if another
# request with the key answered first (answered_meanwhile).
_ANSWER = prebuilt(lambda insert: insert(_TABLE))
_SCOPE_INDEX = "ux_idempotency_keys_scope"
# pg_try_advisory_xact_lock(LOCK_SPACE, <the key's hash>): the first number keeps these locks apart from the
# service's other advisory locks (the two-number form never meets the one-number form in any case).
LOCK_SPACE = 0x1DE3
_TAKE_LOCK = func.pg_try_advisory_xact_lock(bindparam("p_space"), bindparam("p_hash")).label("held")
_TAKE = prebuilt(lambda insert: select(_TAKE_LOCK))
_HOLD = prebuilt(lambda insert: select(
    _TAKE_LOCK,
    select(_TABLE.c.id).where(_TABLE.c.api_key_id == bindparam("p_api_key_id"),
                              _TABLE.c.key == bindparam("p_key")).scalar_subquery().label("known")))
# The SET columns are the execution's column keys; the claim is matched by p_id and p_locked_at.
_COMPLETE = prebuilt(lambda insert: update(_TABLE).where(
    _TABLE.c.id == bindparam("p_id"), _TABLE.c.locked_at == bindparam("p_locked_at")))


def lock_number(api_key_id: str, key: str) -> int:
    """The key's advisory lock number: 32 bits of its hash, signed (PostgreSQL's ``int``). Two keys that share a
    number only cost each other a 409 ``request_in_progress`` when their requests run at the same moment."""
    digest = hashlib.sha256(api_key_id.encode() + b"\n" + key.encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def hold(session: AsyncSession, lock: KeyLock) -> None:
    """Hold the key for the request's transaction (PostgreSQL): its first statement takes the key's
    advisory lock and looks for the key's record. A record found raises :class:`KnownKey` (answer as
    :func:`claim` says); a lock held by another transaction, :class:`KeyBusy` (a 409 ``request_in_progress``).
    Nothing else the request sends goes out before (``db.guard``)."""

    def check(rows: list) -> None:
        [(held, known)] = rows
        if known is not None:
            raise KnownKey
        if not held:
            raise KeyBusy

    db_.guard(session, _HOLD(session), {**_lock_params(lock), "p_api_key_id": lock.api_key_id, "p_key": lock.key},
              check)


def _lock_params(lock: KeyLock) -> dict[str, int]:
    return {"p_space": LOCK_SPACE, "p_hash": lock_number(lock.api_key_id, lock.key)}


def answered_meanwhile(exc: DBAPIError) -> bool:
    """Whether a KeyLock's answer was refused because another request with the key answered first."""
    cause = getattr(getattr(exc, "orig", None), "__cause__", None)
    return getattr(cause, "constraint_name", None) == _SCOPE_INDEX


async def claim(
    db: Database, *, api_key_id: str, key: str, req_hash: str, now: datetime, lock_seconds: int, ttl_days: int,
) -> Claim | Replay:
    """Claim ``key`` for this request, or say what to answer instead (a replay, or a 409 raised): the way of
    SQLite, and of a key met before (a retry) on PostgreSQL. Each statement stands alone (the claim is one
    conditional insert, a takeover one compare-and-set update), so they run without a transaction of their own on
    PostgreSQL."""
    values = {"api_key_id": api_key_id, "key": key, "request_hash": req_hash, "status": "in_progress",
              "locked_at": now, "created_at": now}
    for _ in range(3):
        async with db.statements() as session:
            claimed = await fetch(session, _CLAIM(session), values)
            if claimed:
                return Claim(claimed[0][0], now)
            found = (await session.execute(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key)
            )).scalar_one_or_none()
            if found is None:
                continue  # released between our insert and our read: try again
            if found.created_at < now - timedelta(days=ttl_days):
                await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == found.id))
                continue  # expired: forget it and claim afresh
            if found.request_hash not in (req_hash, ERASED):
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used with a different request. Use a new key for a "
                    "new request.")
            if found.status == "completed":
                return Replay(found.response_status or 200, found.response_body or b"",
                              found.response_type or "application/json")
            if found.locked_at > now - timedelta(seconds=lock_seconds):
                raise still_running()
            taken = await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.id == found.id, IdempotencyRecord.locked_at == found.locked_at,
                       IdempotencyRecord.status == "in_progress")  # not an answer that landed meanwhile
                .values(locked_at=now)
            )
            if taken.rowcount == 1:
                return Claim(found.id, now)
            raise RequestInProgress("Another retry of this request has just started; retry in a moment.")
    raise RequestInProgress("The idempotency key is changing hands; retry in a moment.")


def _answer(lock: KeyLock, status: int, body: bytes, media_type: str) -> dict:
    return {"api_key_id": lock.api_key_id, "key": lock.key, "request_hash": lock.request_hash,
            "status": "completed", "response_status": status, "response_body": body, "response_type": media_type,
            "locked_at": lock.at, "created_at": lock.at}


def _subject(subject: str | None) -> dict[str, str]:
    """The subject's column, only where there is one: the other answers' statements stay as they were."""
    return {} if subject is None else {"subject": subject}


async def complete(session: AsyncSession, claim_: Claim | KeyLock, *, status: int, body: bytes,
                   media_type: str, subject: str | None = None) -> None:
    """Record the answer in the request's own transaction. If the claim was taken over meanwhile (this process
    was too slow and a retry started), raise so that this request's work rolls back. A KeyLock's record is
    inserted now; if another request with the key answered first, the insert fails (:func:`answered_meanwhile`)
    and this request's work rolls back with it. ``subject``: the member whose personal data the answer holds
    (:func:`scrub` rewrites it when they are erased)."""
    if isinstance(claim_, KeyLock):
        # The request's deferred writes go out with it: it touches none of their rows.
        await execute(session, _ANSWER(session), _answer(claim_, status, body, media_type) | _subject(subject),
                      combine=True)
        return
    changed = await execute(session, _COMPLETE(session), {
        "p_id": claim_.record_id, "p_locked_at": claim_.locked_at,
        "status": "completed", "response_status": status, "response_body": body, "response_type": media_type,
        **_subject(subject),
    }, combine=True)  # the request's deferred writes go out with it: it touches none of their rows
    if changed != 1:
        raise RequestInProgress("A retry of this request took over while it was running; retry to get its "
                                "answer.")


async def answer_alone(session: AsyncSession, lock: KeyLock, *, status: int, body: bytes,
                       media_type: str) -> bool:
    """Record a KeyLock's answer in a transaction of its own (the request's work was rolled back: a 4xx), under
    the key's lock again: False, with nothing written, if the key has a record already; a 409
    ``request_in_progress`` if another request holds the key (it may carry another body: its answer, not this
    one, is the key's)."""
    [(held,)] = await fetch(session, _TAKE(session), _lock_params(lock))
    if not held:
        raise still_running()
    return bool(await fetch(session, _CLAIM(session), _answer(lock, status, body, media_type)))


# The request hash of an answer scrubbed by an erasure: no request's hash (those are 64 hex digits).
ERASED = "erased"


async def scrub(session: AsyncSession, subject: str, body: bytes) -> None:
    """Put ``body`` in place of every kept answer that holds ``subject``'s personal data (their erasure): a replay
    then answers what the member is now, and no copy of what they were rests here. The request's hash goes too:
    a digest of the enrolment's name, phone, email and birthday, it confirmed a guess of them (the guessed body
    replayed, any other was a 409). A scrubbed key replays its answer whatever the body."""
    await session.execute(update(IdempotencyRecord).where(IdempotencyRecord.subject == subject)
                          .values(response_body=body, request_hash=ERASED))


async def release(db: Database, claim_: Claim | KeyLock) -> None:
    """Let a retry run the request again (a 5xx). A KeyLock's lock went with the request's transaction."""
    if isinstance(claim_, KeyLock):
        return
    async with db.statements() as session:
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.id == claim_.record_id, IdempotencyRecord.locked_at == claim_.locked_at)
        )


async def purge_expired(session: AsyncSession, now: datetime, ttl_days: int) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - timedelta(days=ttl_days))
    )
    return result.rowcount or 0
