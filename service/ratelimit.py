"""A small fixed-window rate limiter whose counters live in the database, so a limit holds across every worker
process and replica (DESIGN §2: all state in the database).

Used for failed code look-ups (vouchers; gift-card PINs): an attacker guessing codes must not learn which exist.
A caller is refused (429 ``rate_limited`` with ``Retry-After``) once ``limit`` failures were counted in the
current window; the window is fixed (``window_seconds`` long, aligned to the epoch), so at a window's edge up to
``2 × limit`` failures can fall within ``window_seconds`` — acceptable for a brake on guessing.

Failures must be counted even though the request that met them answers with an error and rolls back: callers
count them with :meth:`Guard.fail`, which writes in a short transaction of its own (as idempotency claims do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request
from sqlalchemy import BigInteger, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from service.auth.dependencies import authenticate
from service.db import Database, UTCDateTime, insert_unless_duplicate
from service.errors import RateLimited

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RateLimitCounter(SQLModel, table=True):
    __tablename__ = "rate_limits"

    key: str = Field(primary_key=True, max_length=128)
    window_start: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    count: int = Field(sa_type=BigInteger)


@dataclass(frozen=True, slots=True)
class Policy:
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    count: int
    retry_after: int  # seconds until the window ends (0 when allowed)


# --- pure rules ---------------------------------------------------------------------------------------------

def window_start(now: datetime, window_seconds: int) -> datetime:
    """The start of the fixed window holding ``now`` (windows are aligned to the epoch)."""
    elapsed = int((now - _EPOCH).total_seconds())
    return _EPOCH + timedelta(seconds=elapsed - elapsed % window_seconds)


def verdict(count: int, policy: Policy, now: datetime) -> Verdict:
    """``count`` failures so far in ``now``'s window: may the caller try again?"""
    if count < policy.limit:
        return Verdict(True, count, 0)
    end = window_start(now, policy.window_seconds) + timedelta(seconds=policy.window_seconds)
    return Verdict(False, count, max(1, int((end - now).total_seconds() + 0.999)))


# --- counters -----------------------------------------------------------------------------------------------

async def peek(session: AsyncSession, key: str, policy: Policy, now: datetime) -> Verdict:
    """The caller's standing in the current window, without counting anything."""
    start = window_start(now, policy.window_seconds)
    count = (await session.execute(select(RateLimitCounter.count).where(
        RateLimitCounter.key == key, RateLimitCounter.window_start == start))).scalar_one_or_none()
    return verdict(int(count or 0), policy, now)


async def hit(session: AsyncSession, key: str, policy: Policy, now: datetime, *, amount: int = 1) -> Verdict:
    """Count ``amount`` events for ``key`` in the current window; the verdict after counting them. The counter
    row is created by a unique insert and then incremented in place, so concurrent hits never lose a count."""
    start = window_start(now, policy.window_seconds)
    if not await insert_unless_duplicate(session, RateLimitCounter(key=key, window_start=start, count=amount)):
        await session.execute(
            update(RateLimitCounter).where(RateLimitCounter.key == key, RateLimitCounter.window_start == start)
            .values(count=RateLimitCounter.count + amount).execution_options(synchronize_session=False))
    count = (await session.execute(select(RateLimitCounter.count).where(
        RateLimitCounter.key == key, RateLimitCounter.window_start == start))).scalar_one()
    return verdict(int(count), policy, now)


async def purge(session: AsyncSession, before: datetime) -> int:
    """Forget windows that ended before ``before`` (the sweep)."""
    result = await session.execute(delete(RateLimitCounter).where(RateLimitCounter.window_start < before))
    return result.rowcount or 0


@dataclass(frozen=True, slots=True)
class Guard:
    """Failures of one kind for one caller, counted outside the request's own transaction."""

    db: Database
    key: str
    policy: Policy

    async def check(self, now: datetime) -> None:
        """Refuse (429) a caller who has used up the window's failures."""
        async with self.db.transaction(write=False) as session:
            standing = await peek(session, self.key, self.policy, now)
        if not standing.allowed:
            raise_limited(standing)

    async def fail(self, now: datetime, *, amount: int = 1) -> Verdict:
        """Count failures in a transaction of their own: they stay counted when the request rolls back."""
        async with self.db.transaction() as session:
            return await hit(session, self.key, self.policy, now, amount=amount)


def raise_limited(standing: Verdict) -> None:
    raise RateLimited(f"Too many unknown codes were tried with this key; try again in {standing.retry_after} "
                      "seconds.", headers={"Retry-After": str(standing.retry_after)},
                      retry_after=standing.retry_after)


def failed_lookups(scope: str):
    """A route dependency: the :class:`Guard` for failed look-ups of ``scope`` by the calling API key, with the
    limit from the settings (``LOYALTY_FAILED_LOOKUP_LIMIT`` per ``LOYALTY_FAILED_LOOKUP_WINDOW_SECONDS``)."""

    async def dependency(request: Request) -> Guard:
        principal = await authenticate(request)
        settings = request.app.state.settings
        return Guard(request.app.state.db, f"{scope}:{principal.key_id}",
                     Policy(settings.failed_lookup_limit, settings.failed_lookup_window_seconds))

    return dependency
