"""HTTP plumbing shared by every domain's routes: the unit of work per request, idempotency, pagination.

:class:`UnitOfWorkRoute` gives each request one session, committed once before the response is sent and
rolled back on any error (STYLE.md "Transactions and concurrency"). A deadlock or serialization failure
reruns the whole request a bounded number of times. Routes opt into idempotency with :func:`idempotent`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from service import idempotency
from service.auth.dependencies import authenticate
from service.clock import Clock
from service.db import MAX_ATTEMPTS, backoff, is_retryable
from service.errors import ServiceError, ValidationFailed, render_known_error, violation_error
from service.text import PRINTABLE_OR_EMPTY

IDEMPOTENCY_EXTRA = "x-idempotency"
log = logging.getLogger(__name__)
_SESSION = "loyalty.session"


def request_session(request: Request) -> AsyncSession:
    """The request's session (one per request; :class:`UnitOfWorkRoute` commits it)."""
    session = request.scope.get(_SESSION)
    if session is None:
        session = request.app.state.db.session(write=request.method != "GET")
        request.scope[_SESSION] = session
    return session


# The dependencies below are coroutines although none of them awaits: FastAPI runs a plain ``def`` dependency
# in a worker thread, and that hand-off costs more than the rest of a look-up.
async def get_session(request: Request) -> AsyncSession:
    return request_session(request)


async def get_read_session(request: Request) -> AsyncSession:
    """The request's session for a route that only reads, statement by statement (see
    :meth:`service.db.Database.autocommit_session`); committed and closed like :func:`get_session`'s."""
    session = request.scope.get(_SESSION)
    if session is None:
        session = request.scope[_SESSION] = request.app.state.db.autocommit_session()
    return session


async def get_clock(request: Request) -> Clock:
    return request.app.state.clock


Session = Annotated[AsyncSession, Depends(get_session)]
ReadSession = Annotated[AsyncSession, Depends(get_read_session)]
ClockDep = Annotated[Clock, Depends(get_clock)]


async def _close_session(request: Request, *, commit: bool) -> None:
    session: AsyncSession | None = request.scope.pop(_SESSION, None)
    if session is None:
        return
    try:
        if commit:
            await session.commit()
        else:
            await session.rollback()
    finally:
        await session.close()


class UnitOfWorkRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        mode = (self.openapi_extra or {}).get(IDEMPOTENCY_EXTRA)
        # FastAPI reads the body before it runs dependencies: authenticate first, so that a caller without a
        # valid key hears 401 whatever it sent (not a 400 about its JSON).
        needs_key = mode is not None or any(
            getattr(dep.call, "requires_api_key", False) for dep in self.dependant.dependencies)
        kept: KeptAnswer | None = next((dep.call.kept_answer for dep in self.dependant.dependencies
                                        if hasattr(dep.call, "kept_answer")), None)

        async def run_once(request: Request, claim: idempotency.Claim | idempotency.KeyLock | None) -> Response:
            if isinstance(claim, idempotency.KeyLock):
                idempotency.hold(request_session(request), claim)
            try:
                response = await handler(request)
                if response.status_code >= 400:
                    await _close_session(request, commit=False)
                    if claim is not None:  # an answer, not an exception: remember a 4xx, free the key on a 5xx
                        if response.status_code < 500:
                            return await _remember(request, claim, response, kept)
                        await idempotency.release(request.app.state.db, claim)
                    return response
                if claim is not None:
                    body = bytes(response.body)
                    await idempotency.complete(
                        request_session(request), claim, status=response.status_code,
                        body=kept.redact(body) if kept and kept.redact else body,
                        media_type=response.media_type or "application/json",
                        subject=kept.subject(body) if kept and kept.subject else None,
                    )
                await _close_session(request, commit=True)
                return response
            except DBAPIError as exc:
                await _close_session(request, commit=False)
                if isinstance(claim, idempotency.KeyLock) and idempotency.answered_meanwhile(exc):
                    raise idempotency.KnownKey from exc
                known = violation_error(exc)  # a database error that stands for a client error (errors.py)
                if known is None:
                    raise
                raise known from exc
            except BaseException:
                await _close_session(request, commit=False)
                raise

        async def run(request: Request) -> Response:
            if needs_key:
                await authenticate(request)
            if mode is None:
                return await attempts(request, None)
            claimed = await _claim(request, required=mode == "required", kept=kept)
            if isinstance(claimed, Response):
                return claimed
            try:
                return await attempts(request, claimed)
            except idempotency.KnownKey:  # the key's lock found the key answered, or answered meanwhile
                claimed = await _claim(request, required=True, kept=kept, lock=False)
                if isinstance(claimed, Response):
                    return claimed
                return await attempts(request, claimed)  # a claim taken over from a dead process, or expired

        async def attempts(request: Request, claim: idempotency.Claim | idempotency.KeyLock | None) -> Response:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    return await run_once(request, claim)
                except (idempotency.KnownKey, idempotency.RequestInProgress):
                    raise  # not this request's answer: never remembered
                except idempotency.KeyBusy as exc:
                    raise idempotency.still_running() from exc
                except DBAPIError as exc:
                    if attempt < MAX_ATTEMPTS and is_retryable(exc):
                        await asyncio.sleep(backoff(attempt))
                        continue
                    if claim is not None:
                        await idempotency.release(request.app.state.db, claim)
                    raise
                except Exception as exc:
                    if claim is None:
                        raise
                    response = render_known_error(request, exc)
                    if response is None:  # unexpected: free the key so a retry runs again, then report a 500
                        await idempotency.release(request.app.state.db, claim)
                        raise
                    return await _remember(request, claim, response, kept)
            raise AssertionError("unreachable")

        return run


FastAnswer = Callable[[Request], Awaitable[bytes | None]]


def fast_paths(router: APIRouter,
               answers: dict[Callable[..., Any], FastAnswer]) -> dict[str, tuple[APIRoute, FastAnswer]]:
    """:class:`FastPaths`' table for some GET routes of ``router``: each endpoint's path, its route and its fast
    answer."""
    table = {}
    for route in router.routes:
        answer = answers.get(getattr(route, "endpoint", None))
        if answer is not None:
            if route.methods != {"GET"} or "{" in route.path:
                raise ValueError(f"{route.path}: only a GET route of a fixed path has a fast answer")
            table[route.path] = (route, answer)
    return table


class FastPaths:
    """ASGI middleware, inside the others (the access log and metrics see its answers as the route's): answers a
    hot read of a fixed path without FastAPI's routing, dependency solving and response validation (a till's
    look-up, in process: 0.73 to 1.0 ms of CPU through the route, 0.47 to 0.52 ms here).

    A fast answer handles its route's common case only and builds its body with the route's own service and
    schemas. Whatever else (None, or a :class:`ServiceError` raised: a missing key, a malformed card number)
    goes on to the route, which answers it as ever, errors included; so does an unexpected error, logged. It may
    only read: the route may run after it."""

    def __init__(self, app, answers: dict[str, tuple[APIRoute, FastAnswer]]) -> None:
        self.app = app
        self.answers = answers

    async def __call__(self, scope, receive, send) -> None:
        found = self.answers.get(scope.get("path")) if scope["type"] == "http" and scope["method"] == "GET" else None
        if found is not None:
            route, answer = found
            try:
                body = await answer(Request(scope, receive))
            except ServiceError:
                body = None
            except Exception:
                log.warning("the fast answer to %s failed; the route answers", route.path, exc_info=True)
                body = None
            if body is not None:
                scope["route"] = route
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def _claim(request: Request, *, required: bool, kept: KeptAnswer | None = None,
                 lock: bool = True) -> idempotency.Claim | idempotency.KeyLock | Response | None:
    """How the request holds its key: a KeyLock on PostgreSQL (nothing sent yet: the request's first statement
    takes it), otherwise (SQLite; or ``lock`` False, for a key met before) a claim, or the answer to give
    instead (a replay; a 409 raised)."""
    principal = await authenticate(request)
    key = idempotency.validate_key(request.headers.get(idempotency.HEADER), required=required)
    if key is None:
        return None
    settings = request.app.state.settings
    req_hash = idempotency.request_hash(request.method, request.url.path, await request.body())
    now = request.app.state.clock.now()
    if lock and request.app.state.db.dialect == "postgresql":
        return idempotency.KeyLock(principal.key_id, key, req_hash, now)
    claimed = await idempotency.claim(
        request.app.state.db, api_key_id=principal.key_id, key=key, req_hash=req_hash, now=now,
        lock_seconds=settings.idempotency_lock_seconds, ttl_days=settings.idempotency_ttl_days,
    )
    if isinstance(claimed, idempotency.Replay):
        body = kept.restore(request, claimed.body) if kept and kept.restore and claimed.status < 400 else claimed.body
        return Response(body, status_code=claimed.status, media_type=claimed.media_type,
                        headers={"Idempotent-Replayed": "true"})
    return claimed


async def _remember(request: Request, claim: idempotency.Claim | idempotency.KeyLock, response: Response,
                    kept: KeptAnswer | None) -> Response:
    """A 4xx answer is remembered in a transaction of its own (the request's work was rolled back). A KeyLock's key
    is taken again for it: if another request with the key runs now, this one answers 409 ``request_in_progress``
    (the other may carry another body); if one answered meanwhile, that answer is the key's and this caller gets
    it too (the same question, the same answer)."""
    db = request.app.state.db
    answer = {"status": response.status_code, "body": bytes(response.body),
              "media_type": response.media_type or "application/problem+json"}
    if isinstance(claim, idempotency.KeyLock):
        async with db.transaction() as session:
            if await idempotency.answer_alone(session, claim, **answer):
                return response
        claimed = await _claim(request, required=True, kept=kept, lock=False)
        if isinstance(claimed, Response):
            return claimed
        claim = claimed  # a record of a dead process's, taken over: this is the answer
    async with db.transaction() as session:
        await idempotency.complete(session, claim, **answer)
    return response


async def _idempotency_header_required(
    idempotency_key: Annotated[str, Header(alias=idempotency.HEADER, min_length=1, max_length=255, description=(
        "A new unique value per distinct request (1-255 printable ASCII characters); a retry sends the same value. "
        "Without it: 400 `idempotency_key_required`."))],
) -> None:
    """Declares the header required (a generated client's method takes it as a parameter). Its absence never reaches
    this: ``_claim`` answers it first, with 400 ``idempotency_key_required``, as API.md has it (not the 422 this
    declaration alone would give)."""
    return None


async def _idempotency_header_optional(
    idempotency_key: Annotated[str | None, Header(alias=idempotency.HEADER, min_length=1, max_length=255,
        description="Optional. Send it to make retries safe: a retry with the same value replays the answer.")]
    = None,
) -> None:
    return None


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """How an idempotent route's successful answer is kept. When part of it is a secret that must not rest in the
    database (gift card PINs), ``redact`` makes the copy that is stored and ``restore`` rebuilds the answer from it
    for a replay. When it holds a member's personal data (an enrolment), ``subject`` names the member, so that
    erasing them rewrites the kept copy (``idempotency.scrub``)."""

    redact: Callable[[bytes], bytes] | None = None
    restore: Callable[[Request, bytes], bytes] | None = None
    subject: Callable[[bytes], str] | None = None


def idempotent(*, required: bool = True, kept: KeptAnswer | None = None) -> dict[str, Any]:
    """Route keyword arguments that make a POST idempotent and document its header."""
    header = _idempotency_header_required if required else _idempotency_header_optional
    dependencies = [Depends(header)]
    if kept is not None:
        async def keeps_answer() -> None:
            return None

        keeps_answer.kept_answer = kept  # type: ignore[attr-defined]  # read by UnitOfWorkRoute
        dependencies.append(Depends(keeps_answer))
    return {"openapi_extra": {IDEMPOTENCY_EXTRA: "required" if required else "optional"},
            "dependencies": dependencies}


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    after: str | None


async def _page(
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many items (default 50).")] = 50,
    after: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE_OR_EMPTY,
                                       description="The `next_cursor` of the previous page.")] = None,
) -> PageParams:
    return PageParams(limit, after)


Page = Annotated[PageParams, Depends(_page)]  # ``?limit=`` (default 50, at most 500) and ``?after=<cursor>``


def next_cursor(items: list[Any], limit: int, key: Callable[[Any], str]) -> str | None:
    return key(items[-1]) if len(items) == limit else None


# ASCII digits only (str.isdigit takes "²", which int() refuses), and few enough for a 64-bit integer.
_NUMBER = re.compile(r"[0-9]{1,18}")
_SIGNED_NUMBER = re.compile(r"-?[0-9]{1,18}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def timed_cursor_of(at: datetime, item_id: str) -> str:
    """The cursor of a newest-first list ordered by a time and then an id: ``<microseconds since 1970>_<id>``
    (no ``+`` or ``:`` to escape in a query string)."""
    return f"{(at - _EPOCH) // _MICROSECOND}_{item_id}"


def timed_cursor(page: PageParams) -> tuple[datetime, str] | None:
    """The ``(time, id)`` a list ordered by :func:`timed_cursor_of`'s cursor continues before; a cursor such a
    list never returned is a 422."""
    if page.after is None:
        return None
    micros, _, item_id = page.after.partition("_")
    if not _SIGNED_NUMBER.fullmatch(micros) or not item_id:
        raise _invalid_cursor()
    try:
        return _EPOCH + int(micros) * _MICROSECOND, item_id
    except OverflowError:
        raise _invalid_cursor() from None


def _invalid_cursor() -> ValidationFailed:
    return ValidationFailed("after: not a cursor this list returned",
                            errors=[{"loc": ["query", "after"], "msg": "invalid cursor"}])


def numbered_cursor(page: PageParams) -> int | None:
    """The entry number a newest-first list of numbered entries continues before (its cursor is the last
    entry's number); a cursor such a list never returned is a 422, not a page of nothing."""
    if page.after is None:
        return None
    if not _NUMBER.fullmatch(page.after):
        raise _invalid_cursor()
    return int(page.after)


__all__ = ["ClockDep", "FastPaths", "KeptAnswer", "Page", "ReadSession", "ServiceError", "Session", "UnitOfWorkRoute",
           "idempotent", "next_cursor", "numbered_cursor", "timed_cursor", "timed_cursor_of"]
