"""Failed attempts, limited across worker processes (DESIGN §7: failed code look-ups are rate-limited per key;
a gift card locks after wrong PINs).

One mechanism for every "so many failures per subject per window" rule: a :class:`Limit` names a ``scope``
(``gift_card_pin``, ``gift_card_lookup``, ``voucher_lookup`` …), how many failures it tolerates and over which
sliding window; the subject is whatever the scope counts per (an API key id, a gift card id).

- State lives in the database (``failed_attempts``, one row per failure), so every replica sees the same
  counts; nothing is kept in process memory.
- :func:`decide` is the rule, a pure function of the failure times: a subject with ``max_failures`` failures in
  the trailing ``window`` is refused until the oldest of those leaves the window (``retry_after``).
- Failures are written in short transactions of their own, which serialize the failures of one subject (an
  advisory lock on PostgreSQL; SQLite has one writer), before the request's own transaction writes anything
  (on SQLite that transaction holds the database's write lock), and they stay whatever the request's
  transaction becomes (it usually answers with an error and rolls back).
- :func:`try_once` counts a try *before* it is made (gift card PINs): a subject never has more than
  ``max_failures`` tries failed or in flight, however many requests arrive at once; a try that succeeds is
  released again (:func:`release`).
- A :class:`Guard` counts a failure once it is known (vouchers screen the codes a request names this way): "at
  most ``max_failures`` answered" holds exactly; the failures that passed the check together are refused.
- Refused attempts are not counted (nothing was tried), so a locked subject becomes usable again on time.
- ``loyalty sweep`` deletes failures older than :data:`RETENTION`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import BigInteger, Column, Index, Integer, and_, bindparam, delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from service.auth.dependencies import authenticate
from service.db import Database, UTCDateTime, dialect_of, fetch, prebuilt, prefetch
from service.errors import RateLimited

# Failures older than this count for no limit (every window is shorter) and are purged by the sweep.
RETENTION = timedelta(days=1)


class FailedAttempt(SQLModel, table=True):
    __tablename__ = "failed_attempts"
    __table_args__ = (
        Index("ix_failed_attempts_scope_subject_at", "scope", "subject", "at"),
        Index("ix_failed_attempts_at", "at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"),
                                                          primary_key=True, autoincrement=True))
    scope: str = Field(max_length=32)
    subject: str = Field(max_length=64)
    at: datetime = Field(sa_type=UTCDateTime)


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str
    max_failures: int
    window: timedelta

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= timedelta(0) or self.window > RETENTION:
            raise ValueError(f"limit {self.scope}: at least one failure over a window of at most {RETENTION}")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # failures still tolerated before the subject is refused
    retry_after: timedelta | None = None  # when refused: how long until the next attempt is allowed
    failures: int = 0  # failures counting in the window now

    @property
    def retry_after_seconds(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (at least 1)."""
        return max(1, math.ceil(self.retry_after.total_seconds())) if self.retry_after else 0


def decide(limit: Limit, failures: Iterable[datetime], now: datetime) -> Decision:
    """May the subject try again at ``now``, given the times of its failures? A failure at ``t`` counts while
    ``now < t + window``. With ``max_failures`` of them counting, the subject is refused until the
    ``max_failures``-th most recent leaves the window."""
    recent = sorted((t for t in failures if now - limit.window < t <= now), reverse=True)
    if len(recent) < limit.max_failures:
        return Decision(True, limit.max_failures - len(recent), failures=len(recent))
    frees_at = recent[limit.max_failures - 1] + limit.window
    return Decision(False, 0, frees_at - now, failures=len(recent))


@dataclass(frozen=True, slots=True)
class Tried:
    """One try counted in advance under each of its limits (:func:`try_once`): ``refused`` names the first limit
    that refused it (nothing was counted then); otherwise ``decisions`` hold each limit's standing with the try
    counted, and ``row_ids`` the failures written for it, which :func:`release` deletes when the try succeeds."""

    decisions: dict[tuple[str, str], Decision]
    refused: tuple[str, str] | None = None
    row_ids: tuple[int, ...] = ()


async def try_once(db: Database, holds: Sequence[tuple[Limit, str]], now: datetime, *,
                   checks: Sequence[tuple[Limit, str]] = ()) -> Tried:
    """Count a try as a failure under each ``(limit, subject)`` of ``holds`` before it is made, in a transaction
    of its own that serializes the tries of each subject (advisory locks on PostgreSQL, taken in one order;
    SQLite has one writer), unless a limit of ``checks`` (decided, not counted) or of ``holds`` already refuses
    it. A subject of ``holds`` thus never has more than ``max_failures`` tries failed or in flight in its window,
    however many requests arrive at once (so tries of one subject at once beyond that are refused too, right or
    wrong); a try that succeeds is released."""
    everything = [*checks, *holds]
    async with db.transaction(write=bool(holds)) as session:
        await _serialize(session, [(limit.scope, subject) for limit, subject in holds])
        query = select(FailedAttempt.scope, FailedAttempt.subject, FailedAttempt.at).where(or_(*(
            and_(FailedAttempt.scope == limit.scope, FailedAttempt.subject == subject,
                 FailedAttempt.at > now - limit.window) for limit, subject in everything)))
        times: dict[tuple[str, str], list[datetime]] = {}
        for scope, subject, at in (await session.execute(query)).all():
            times.setdefault((scope, subject), []).append(at)
        # A request that read the clock earlier may count after one that read it later: judge at the latest.
        at = max([now, *(t for ts in times.values() for t in ts)])
        decisions = {(limit.scope, subject): decide(limit, times.get((limit.scope, subject), ()), at)
                     for limit, subject in everything}
        refused = next((k for k, d in decisions.items() if not d.allowed), None)
        if refused is not None or not holds:
            return Tried(decisions, refused)
        ids = (await session.execute(insert(FailedAttempt.__table__).returning(FailedAttempt.__table__.c.id),
                                     [{"scope": limit.scope, "subject": subject, "at": now}
                                      for limit, subject in holds])).scalars().all()
    counted = {(limit.scope, subject) for limit, subject in holds}
    return Tried({k: Decision(True, d.remaining - 1, failures=d.failures + 1) if k in counted else d
                  for k, d in decisions.items()}, row_ids=tuple(ids))


async def _serialize(session: AsyncSession, subjects: Sequence[tuple[str, str]]) -> None:
    """Wait for the other transactions counting failures of these ``(scope, subject)`` (PostgreSQL's advisory
    locks to the transaction's end, taken in one order; SQLite's transactions write one at a time)."""
    if dialect_of(session) == "postgresql":
        for scope, subject in sorted(set(subjects)):
            await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"{scope}:{subject}"))))


async def release(db: Database, tried: Tried) -> None:
    """The try succeeded: it is no failure (deleted in a transaction of its own)."""
    if tried.row_ids:
        async with db.transaction() as session:
            await session.execute(delete(FailedAttempt).where(FailedAttempt.id.in_(tried.row_ids)))


# A guard's check, on every request that names a code: built once, run without the ORM (``db.fetch``).
_FAILED = FailedAttempt.__table__.c
_FAILURE_TIMES = prebuilt(lambda _: select(_FAILED.at).where(
    _FAILED.scope == bindparam("p_scope"), _FAILED.subject == bindparam("p_subject"),
    _FAILED.at > bindparam("p_since")))


@dataclass(frozen=True, slots=True)
class Guard:
    """The failures of one subject under one limit, checked and counted in short transactions of their own."""

    db: Database
    limit: Limit
    subject: str

    def prefetch_check(self, session: AsyncSession, now: datetime) -> None:
        """Announce :meth:`check`'s read (``db.prefetch``), to go out with the caller's other reads."""
        prefetch(session, _FAILURE_TIMES(session), self._since(now))

    async def check(self, session: AsyncSession, now: datetime) -> None:
        """Refuse (429) a subject that has used up its failures (one read, on the caller's session)."""
        times = [row.at for row in await fetch(session, _FAILURE_TIMES(session), self._since(now))]
        decision = decide(self.limit, times, now)
        if not decision.allowed:
            raise_limited(decision)

    def _since(self, now: datetime) -> dict[str, Any]:
        return {"p_scope": self.limit.scope, "p_subject": self.subject, "p_since": now - self.limit.window}

    async def fail(self, now: datetime, *, amount: int = 1) -> Decision:
        """Count ``amount`` failures now, committed at once (they outlive the request's rollback); the decision
        with them counted. Failures of one subject are counted one request after another."""
        async with self.db.transaction() as session:
            await _serialize(session, [(self.limit.scope, self.subject)])
            await session.execute(insert(FailedAttempt.__table__),
                                  [{"scope": self.limit.scope, "subject": self.subject, "at": now}] * amount)
            times = list((await session.execute(select(FailedAttempt.at).where(
                FailedAttempt.scope == self.limit.scope, FailedAttempt.subject == self.subject,
                FailedAttempt.at > now - self.limit.window))).scalars())
        # A request that read the clock earlier may count after one that read it later: judge at the latest.
        return decide(self.limit, times, max([now, *times]))


def raise_limited(decision: Decision) -> None:
    seconds = decision.retry_after_seconds
    raise RateLimited(f"Too many unknown codes were tried with this key; try again in {seconds} seconds.",
                      headers={"Retry-After": str(seconds)}, retry_after=seconds)


def failed_lookups(scope: str):
    """A route dependency: the :class:`Guard` for failed look-ups of ``scope`` by the calling API key, with the
    limit from the settings (``LOYALTY_FAILED_LOOKUP_LIMIT`` per ``LOYALTY_FAILED_LOOKUP_WINDOW_SECONDS``)."""

    async def dependency(request: Request) -> Guard:
        principal = await authenticate(request)
        settings = request.app.state.settings
        limit = Limit(scope, settings.failed_lookup_limit, timedelta(seconds=settings.failed_lookup_window_seconds))
        return Guard(request.app.state.db, limit, principal.key_id)

    return dependency


async def purge(session: AsyncSession, now: datetime) -> int:
    """Delete failures older than :data:`RETENTION` (``loyalty sweep``)."""
    result = await session.execute(delete(FailedAttempt).where(FailedAttempt.at <= now - RETENTION))
    return int(result.rowcount or 0)
