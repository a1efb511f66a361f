"""Webhook delivery: fan-out from the feed, claiming, sending, recording. Runs inside the service (started in
the app's lifespan when ``LOYALTY_WEBHOOK_WORKER`` is on) or as ``loyalty deliver``; any number of workers in any
number of processes may run at once.

One pass (:func:`deliver_once`), each step its own short transaction; the HTTP calls run outside any:

1. number newly committed events (:func:`service.events.service.publish_committed`);
2. fan out: for each active endpoint (locked, ``SKIP LOCKED``: a worker holding it is doing this), one delivery
   row per new event it subscribes to, and its cursor moves past them (unique per endpoint and event);
3. claim due deliveries (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's single writer serializes claims):
   each is stamped with this pass's claim and its next attempt moved a lease ahead, so no other worker takes it
   while it is being sent; a worker that dies mid-send leaves it to be retried when the lease runs out;
4. POST each event, signed (``X-Loyalty-Signature``), as many at once as the client has connections, each
   send cut off 10 s after its turn came whatever the receiver does (a 2xx status within that time is a success;
   of a refusal's body only the first bytes are read, for ``last_error``); a claim is never larger than what
   can be sent so within half its lease (:func:`service.events.rules.claim_size`), so every send of a claim
   ends before its lease does;
5. record the outcomes, only for deliveries still under this claim: 2xx is delivered; anything else is
   retried with exponential backoff and jitter for up to 3 days (:mod:`service.events.rules`), and an endpoint
   that has failed every attempt for a day is disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import Clock
from service.db import Database
from service.events import repository, rules
from service.events import service as events
from service.events.models import WebhookDelivery
from service.ids import new_id

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 500
CLAIM_BATCH = 50
# A claim's lease: no other worker takes its deliveries before it ends. A claim's sends go MAX_CONNECTIONS at a
# time, each ends within TIMEOUT.read (send() enforces it), and a claim holds no more of them than that can send
# within half the lease (rules.claim_size), so the lease outlives the sends whatever the receivers do.
LEASE = timedelta(minutes=2)
MAX_CONNECTIONS = 20  # the client's pool, and how many sends of one pass run at once
# 5 s to connect; the 10 s bound each read and write, and send() holds the whole send to them too ("10 s in all").
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
BODY_PEEK = 2048  # bytes of a refusal's body read for last_error (the rest is never read)
USER_AGENT = "loyalty-webhooks/1"


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, headers={"User-Agent": USER_AGENT},
                             limits=httpx.Limits(max_connections=MAX_CONNECTIONS))


@dataclass(frozen=True)
class Job:
    delivery_id: str
    webhook_id: str
    url: str
    secret: str
    event_id: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class FanOut(NamedTuple):
    made: int  # delivery rows made
    behind: bool  # some endpoint read a full batch: more events may be waiting past its cursor


async def fan_out(session: AsyncSession, now: datetime) -> FanOut:
    """Delivery rows for the events numbered since each active endpoint's cursor, at most ``FAN_OUT_BATCH``
    events per endpoint."""
    made, behind = 0, False
    for hook in await repository.lock_active_webhooks(session):
        new = await repository.feed(session, after=hook.cursor, types=None, limit=FAN_OUT_BATCH)
        if not new:
            continue
        rows = [WebhookDelivery(id=new_id("dlv"), webhook_id=hook.id, event_id=e.event_id, event_type=e.type,
                                status="pending", attempts=0, window_start=now, next_attempt_at=now, created_at=now)
                for e in new if rules.wants(hook.types, e.type)]
        await repository.add_deliveries(session, rows)
        hook.cursor = new[-1].position
        made += len(rows)
        behind = behind or len(new) == FAN_OUT_BATCH
    await session.flush()
    return FanOut(made, behind)


async def claim(session: AsyncSession, now: datetime, limit: int = CLAIM_BATCH) -> tuple[str, list[Job]]:
    """Claim up to ``limit`` due deliveries; returns the claim's token and what to send."""
    token = new_id("clm")
    rows = await repository.claim_due(session, now, limit)
    if not rows:
        return token, []
    hooks = {h.id: h for h in await repository.list_webhooks_by_id(session, [r.webhook_id for r in rows])}
    found = await repository.events_by_ids(session, [r.event_id for r in rows])
    jobs = []
    for row in rows:
        row.claim, row.next_attempt_at = token, now + LEASE
        hook = hooks[row.webhook_id]
        body = events.to_public(found[row.event_id]).model_dump_json().encode()
        jobs.append(Job(row.id, hook.id, hook.url, hook.secret, row.event_id, body))
    await session.flush()
    return token, jobs


async def send(http: httpx.AsyncClient, job: Job, clock: Clock) -> Outcome:
    """POST one delivery; never raises (short of cancellation). Whatever goes wrong, including what is not an
    ``httpx.HTTPError`` (``idna`` refusing a stored host, a bug), is this delivery's failed attempt, recorded
    with the error's type and message: one bad endpoint must not stop the others' outcomes from being recorded.

    The whole send is cut off after ``TIMEOUT.read`` seconds (httpx's timeouts bound each read, so a receiver
    dribbling its answer would hold it for as long as it likes): a status that comes later is a failure, and no
    send outlives its claim's lease. The time counts from here: :func:`send_all` runs no more sends at once than
    the client has connections, so none spends it waiting for one. The answer is streamed: a 2xx is a success
    as soon as its status arrives (its body is never read); of a refusal's body the first :data:`BODY_PEEK`
    bytes go into ``last_error``."""
    timestamp = int(clock.now().timestamp())
    headers = {"Content-Type": "application/json", rules.SIGNATURE_HEADER: rules.signature(job.secret, timestamp,
                                                                                           job.body),
               "X-Loyalty-Event-Id": job.event_id, "X-Loyalty-Delivery-Id": job.delivery_id,
               "Accept-Encoding": "identity"}  # the bytes read for last_error are the body's own
    status, peeked = None, b""
    try:
        async with asyncio.timeout(TIMEOUT.read):
            async with http.stream("POST", job.url, content=job.body, headers=headers) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return Outcome(status, None)
                async for chunk in response.aiter_raw():
                    peeked += chunk
                    if len(peeked) >= BODY_PEEK:
                        break
    except TimeoutError:
        if status is None:
            return Outcome(None, f"TimeoutError: no answer within {TIMEOUT.read:g} s")
    except Exception as exc:  # see the docstring
        if status is None:
            return _failed(exc)
    return Outcome(status, rules.refusal(status, peeked[:BODY_PEEK]))


def _failed(exc: BaseException) -> Outcome:
    return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])


async def send_all(http: httpx.AsyncClient, jobs: list[Job], clock: Clock) -> list[Outcome]:
    """Send a claim's deliveries, at most :data:`MAX_CONNECTIONS` at a time. Starting them all at once would
    have those beyond the pool wait for a connection inside their own time limit: with a slow but healthy
    receiver they failed with ``PoolTimeout``, recorded as attempts never made (enough of them disable the
    endpoint), and a slow endpoint's backlog held up every other endpoint's deliveries. A send waiting for its
    turn here has not started: its 10 s start when it runs. One pass at a time per client (as
    :func:`run_worker` and ``loyalty deliver`` do), or the passes would share the pool."""
    slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def one(job: Job) -> Outcome:
        async with slots:
            return await send(http, job, clock)

    # send() does not raise; return_exceptions is the second guard, so that a pass always records its claim.
    sent = await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)
    return [_failed(o) if isinstance(o, BaseException) else o for o in sent]


async def record(session: AsyncSession, token: str, results: list[tuple[Job, Outcome]], now: datetime,
                 rng: random.Random | None = None) -> None:
    """Write the outcomes of one claim (endpoints locked first, then deliveries: the order every writer uses)."""
    hooks = await repository.lock_webhooks(session, [job.webhook_id for job, _ in results])
    outcomes = {job.delivery_id: outcome for job, outcome in results}
    for row in await repository.claimed(session, list(outcomes), token):
        outcome, hook = outcomes[row.id], hooks.get(row.webhook_id)
        row.attempts += 1
        row.last_attempt_at, row.last_status_code, row.last_error, row.claim = now, outcome.status_code, \
            outcome.error, None
        if outcome.ok:
            row.status, row.delivered_at = "delivered", now
            if hook is not None:
                hook.failing_since = None
            continue
        retry_at = rules.next_attempt(row.attempts, row.window_start, now, rng)
        if retry_at is None:
            row.status = "failed"
        else:
            row.next_attempt_at = retry_at
        if hook is None or hook.status != "active":
            continue
        hook.failing_since = hook.failing_since or now
        if rules.should_disable(hook.failing_since, now):
            hook.status, hook.disabled_at = "disabled", now
            hook.disabled_reason = f"Every delivery failed since {hook.failing_since.isoformat()} " \
                                   f"(last: {outcome.error})."[:255]
            log.warning("webhook disabled", extra={"webhook_id": hook.id, "reason": hook.disabled_reason})
    await session.flush()


async def deliver_once(db: Database, clock: Clock, http: httpx.AsyncClient, *, limit: int = CLAIM_BATCH) -> int:
    """One pass: number, fan out, claim, send, record. Returns how many deliveries were attempted.

    The fan-out goes on until every endpoint has read all the events there are: one batch of 500 events of other
    types than an endpoint takes made no delivery, the pass attempted nothing, and ``loyalty deliver --once``
    stopped (the worker slept) with that endpoint's event still due (until 2026-12-08)."""
    await events.publish_committed(db)
    while (await db.run(lambda session: fan_out(session, clock.now()))).behind:
        pass
    size = rules.claim_size(limit, at_once=MAX_CONNECTIONS, send_seconds=TIMEOUT.read, lease=LEASE)
    token, jobs = await db.run(lambda session: claim(session, clock.now(), size))
    if not jobs:
        return 0
    outcomes = await send_all(http, jobs, clock)
    await db.run(lambda session: record(session, token, list(zip(jobs, outcomes, strict=True)), clock.now()))
    return len(jobs)


async def run_worker(db: Database, clock: Clock, *, interval: float, stop: asyncio.Event | None = None) -> None:
    """Deliver until ``stop`` is set (or the task is cancelled): again at once after a busy pass, after
    ``interval`` seconds after an idle one or an error."""
    stop = stop or asyncio.Event()
    async with http_client() as http:
        while not stop.is_set():
            try:
                busy = await deliver_once(db, clock, http)
            except Exception:
                log.exception("webhook delivery pass failed")
                busy = 0
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
