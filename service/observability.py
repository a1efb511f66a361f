"""Request ids, JSON logs and Prometheus metrics, as one pure ASGI middleware (no per-request task overhead)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as _PROMETHEUS_TYPE
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REQUEST_ID = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED and k != "color_message"})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the middleware logs each request once


def loggable_path(scope) -> str:
    """The request's path as a log line may hold it: the matched route's template (``/v1/vouchers/{code}``),
    never the path itself, whose parameters can be bearer secrets (a voucher's or a gift card's code: whoever
    reads the logs could redeem them) or a member's id. A path no route matched (a 404 on routing) keeps its
    first two segments (``/v1/vouchers/…``): enough to see what a client was after."""
    template = getattr(scope.get("route"), "path", None)
    if template:
        return template
    segments = scope.get("path", "").split("/")
    return "/".join(segments[:3]) + ("/…" if len(segments) > 3 else "")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("loyalty_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram(
            "loyalty_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), _PROMETHEUS_TYPE


class ObservabilityMiddleware:
    """Gives every request an id (the caller's ``X-Request-ID`` if well-formed), returns it as a header,
    records metrics by route template and status, and writes one JSON access-log line (its ``path`` as
    :func:`loggable_path` gives it)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger("service.access")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = (scope["method"], template, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(elapsed)
            if self.log.isEnabledFor(logging.INFO):
                self.log.info("request", extra={"request_id": request_id, "method": scope["method"],
                                                "path": loggable_path(scope), "route": template, "status": status,
                                                "ms": round(elapsed * 1000, 2)})
