"""Errors as RFC 9457 ``application/problem+json`` with a stable ``code``.

Business code raises a :class:`ServiceError` subclass (each domain keeps its own in ``errors.py``); the
handlers below are the only place that turns an exception into a response. No input, however malformed,
should reach :func:`unexpected_error`.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.observability import loggable_path

log = logging.getLogger("service.errors")

PROBLEM_JSON = "application/problem+json"


class ServiceError(Exception):
    """A failure the client can act on. Subclasses set ``status``, ``code`` and ``title``."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        self.headers = headers or {}
        super().__init__(self.detail)


class NotFound(ServiceError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ServiceError):
    status, code, title = 409, "conflict", "Conflict"


class Unprocessable(ServiceError):
    status, code, title = 422, "unprocessable", "Unprocessable request"


class ValidationFailed(ServiceError):
    status, code, title = 422, "validation_error", "The request is not valid"


class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(ServiceError):
    status, code, title = 403, "forbidden", "Forbidden"


class RateLimited(ServiceError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ProblemItem(BaseModel):
    """One thing wrong with a request (a ``validation_error``'s ``errors``)."""

    loc: list[str | int] = Field(description="Where: `body`, `query`, `path` or `header`, then the field's path.")
    msg: str


class Problem(BaseModel):
    """The error body every endpoint answers with (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[ProblemItem] | None = Field(default=None, description="With `validation_error`: every problem found.")


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {"type": f"https://loyalty.example/problems/{code}", "title": title, "status": status,
            "detail": detail, "code": code, **extra}
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _service_error(_: Request, exc: ServiceError) -> Response:
    extra = exc.extra
    if exc.code == "validation_error" and "errors" not in extra:  # API.md: validation errors add errors: [{loc, msg}]
        extra = {**extra, "errors": [{"loc": [], "msg": exc.detail}]}
    return problem_response(exc.status, exc.code, exc.title, exc.detail, headers=exc.headers, **extra)


def _loc(loc: tuple[Any, ...] | list[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return problem_response(400, "malformed_json", "Malformed JSON", "The request body is not valid JSON.")
    items = [{"loc": _loc(err.get("loc", ())), "msg": str(err.get("msg", ""))} for err in errors]
    first = items[0] if items else {"loc": [], "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
    detail = f"{where}: {first['msg']}" + (f" (and {len(items) - 1} more)" if len(items) > 1 else "")
    return problem_response(422, "validation_error", "The request is not valid", detail, errors=items)


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 413: "payload_too_large", 415: "unsupported_media_type",
}


def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    title = code.replace("_", " ").capitalize()
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(exc.status_code, code, title, detail, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API serves at this path, from the OpenAPI document (Starlette's own ``Allow`` names only
    the methods of the first route that matched the path)."""
    table = getattr(request.app.state, "allow_table", None)
    if table is None:
        table = [(re.compile("^" + re.sub(r"\{[^/}]+\}", "[^/]+", path) + "$"), {m.upper() for m in ops})
                 for path, ops in request.app.openapi()["paths"].items()]
        request.app.state.allow_table = table
    return sorted({m for pattern, methods in table if pattern.match(request.url.path) for m in methods})


def unexpected_error(request: Request, exc: Exception) -> Response:
    """A 500 for what no other handler knows, logged with its traceback. Starlette calls this after its
    ``except`` block (a plain function, in a worker thread), where no exception is current: the log line names
    ``exc`` itself, or it would carry ``NoneType: None``. (Statement values are kept out of database errors by
    the engine: ``service.db.create_engine``.)"""
    request_id = getattr(request.state, "request_id", None)
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id,
                                                      "path": loggable_path(request.scope)})
    return problem_response(
        500, "internal_error", "Internal server error",
        "Something went wrong on our side; the request was not applied. Quote the request id to support.",
        request_id=request_id,
    )


# A write deferred to go out with a later statement (service.db.defer) fails there, away from the code that knows
# what its failure means: the domain names the constraint and the error it stands for, once.
_VIOLATIONS: dict[str, tuple[type[ServiceError], str]] = {}


def on_violation(constraint: str, error: type[ServiceError], detail: str) -> None:
    """Answer a violation of the database constraint named ``constraint`` with ``error(detail)``."""
    _VIOLATIONS[constraint] = (error, detail)


# PostgreSQL stores no NUL character in text (22021) nor in jsonb (22P05), and refuses one even as a value to look
# for. Schemas keep control characters out of ids and names; any other text field that carries one reaches the
# database and is answered here, whatever the field (SQLite stores it as sent).
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


def violation_error(exc: BaseException) -> ServiceError | None:
    """The client error a database error stands for: the service error registered for the constraint it names
    (``on_violation``), or a 422 for text the database cannot hold; None for any other."""
    cause = getattr(getattr(exc, "orig", None), "__cause__", None)  # the driver's own error (asyncpg's names it)
    if getattr(cause, "sqlstate", None) in _UNSTORABLE_TEXT:
        return ValidationFailed("A text value in this request holds the NUL character (\\u0000), which cannot be "
                                "stored; remove it and send the request again.")
    known = _VIOLATIONS.get(getattr(cause, "constraint_name", None) or "")
    return None if known is None else known[0](known[1])


def render_known_error(request: Request, exc: Exception) -> Response | None:
    """The response for an error the client caused, or ``None`` for one it did not (a bug: a 500)."""
    if isinstance(exc, ServiceError):
        return _service_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return _validation_error(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return _http_error(request, exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, unexpected_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring the problem schema for the given statuses."""
    return {s: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Problem"} for s in statuses}
