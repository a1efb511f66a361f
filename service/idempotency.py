"""Idempotency keys: one mechanism for every POST that moves a balance (API.md "Conventions").

A request carrying ``Idempotency-Key`` first *claims* the key in a short transaction of its own, so a
concurrent duplicate sees it at once. The business work then runs in the request's unit of work, and the
response is written into the claimed record *in that same transaction*: the effect and the remembered answer
commit together or not at all.

- same key, same body, finished: the first response is replayed (``Idempotent-Replayed: true``);
- same key, another body: 409 ``idempotency_key_reused``;
- same key while the first is running: 409 ``request_in_progress``. A claim older than
  ``idempotency_lock_seconds`` belongs to a process that died; the next retry takes it over (and the old
  process, if it was only slow, finds its claim gone and rolls back);
- answers with a 4xx status are remembered and replayed too (the same question gets the same answer); a 5xx
  releases the key so that a retry runs again;
- records are kept ``idempotency_ttl_days`` (at least 7) and then purged by ``loyalty sweep``.

The key is scoped to the API key that sent it; the body is compared after JSON canonicalization (key order
and white space do not matter).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import Index, LargeBinary, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from service.db import Database, UTCDateTime, execute, fetch, fetch_before_transaction, prebuilt
from service.errors import Conflict, ServiceError

HEADER = "Idempotency-Key"


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ux_idempotency_keys_scope", "api_key_id", "key", unique=True),)

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


class IdempotencyKeyRequired(ServiceError):
    status, code, title = 400, "idempotency_key_required", "Idempotency-Key header required"


class InvalidIdempotencyKey(ServiceError):
    status, code, title = 400, "invalid_idempotency_key", "Invalid Idempotency-Key header"


class IdempotencyKeyReused(Conflict):
    code, title = "idempotency_key_reused", "Idempotency key already used for another request"


class RequestInProgress(Conflict):
    code, title = "request_in_progress", "A request with this idempotency key is still running"


@dataclass(frozen=True, slots=True)
class Claim:
    record_id: int
    locked_at: datetime


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
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


_TABLE = IdempotencyRecord.__table__


def _claim_statement(insert):
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: the unique key decides, in one statement.

    On PostgreSQL the claim commits without waiting for its WAL to reach the disk (``synchronous_commit`` off for
    that one statement's transaction, set where a row was inserted): the request's own transaction, which
    completes the claim, commits after it and waits for the WAL up to its own commit, so an answered request's
    claim is on disk with it. A crash can lose only a claim whose request had not been answered, and that
    request is retried as new. It saves the claim's wait for the disk (0.17 ms per commit here, measured one
    after another)."""
    claim = insert(_TABLE).on_conflict_do_nothing()
    if insert is postgresql_insert:
        unflushed = select(func.set_config("synchronous_commit", "off", True)).scalar_subquery()
        return claim.returning(_TABLE.c.id, unflushed)
    return claim.returning(_TABLE.c.id)


_CLAIM = prebuilt(_claim_statement)
# The SET columns are the execution's column keys; the claim is matched by p_id and p_locked_at.
_COMPLETE = prebuilt(lambda insert: update(_TABLE).where(
    _TABLE.c.id == bindparam("p_id"), _TABLE.c.locked_at == bindparam("p_locked_at")))


async def claim(
    db: Database, *, api_key_id: str, key: str, req_hash: str, now: datetime, lock_seconds: int, ttl_days: int,
    request_session: AsyncSession | None = None,
) -> Claim | Replay:
    """Claim ``key`` for this request, or say what to answer instead (a replay, or a 409 raised). Each statement
    stands alone (the claim is one conditional insert, a takeover one compare-and-set update), so they run
    without a transaction of their own on PostgreSQL: two round trips fewer per idempotent request.

    A new key is claimed on ``request_session``'s connection before that session's transaction begins, committed
    on its own all the same (``db.fetch_before_transaction``): no session or connection of its own. A key met
    before (a retry), and SQLite, take the statements below on a session of their own."""
    values = {"api_key_id": api_key_id, "key": key, "request_hash": req_hash, "status": "in_progress",
              "locked_at": now, "created_at": now}
    if request_session is not None:
        claimed = await fetch_before_transaction(request_session, _CLAIM(request_session), values)
        if claimed:
            return Claim(claimed[0][0], now)
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
            if found.request_hash != req_hash:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used with a different request. Use a new key for a "
                    "new request.")
            if found.status == "completed":
                return Replay(found.response_status or 200, found.response_body or b"",
                              found.response_type or "application/json")
            if found.locked_at > now - timedelta(seconds=lock_seconds):
                raise RequestInProgress("The first request with this Idempotency-Key is still being "
                                        "processed; retry in a moment.", headers={"Retry-After": "1"})
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


async def complete(session: AsyncSession, claim_: Claim, *, status: int, body: bytes, media_type: str) -> None:
    """Record the answer in the request's own transaction. If the claim was taken over meanwhile (this process
    was too slow and a retry started), raise so that this request's work rolls back."""
    changed = await execute(session, _COMPLETE(session), {
        "p_id": claim_.record_id, "p_locked_at": claim_.locked_at,
        "status": "completed", "response_status": status, "response_body": body, "response_type": media_type,
    }, combine=True)  # the request's deferred writes go out with it: it touches none of their rows
    if changed != 1:
        raise RequestInProgress("A retry of this request took over while it was running; retry to get its "
                                "answer.")


async def release(db: Database, claim_: Claim) -> None:
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
