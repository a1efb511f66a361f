"""The largest request body the service reads: a bigger one is refused (413 ``payload_too_large``) before it is
read whole. Without it a till's key could send a body of any size, read into memory and parsed on the event loop
before the schema refused it (a 24 MB basket grew a worker by 345 MB and held it for 5 s)."""

from __future__ import annotations

from starlette.exceptions import HTTPException

from service.errors import problem_response


def _too_large(limit: int, size: int | None = None) -> str:
    size_text = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return f"The request body is {size_text}; at most {limit:,} are accepted (LOYALTY_MAX_BODY_BYTES)."


class BodyLimitMiddleware:
    """Refuses a body whose ``Content-Length`` passes ``max_bytes`` at once, and a body sent without one (chunked)
    as soon as what has arrived passes it: raised from the body's reading, so the route answers the 413."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(413, "payload_too_large", "Payload too large",
                                        _too_large(self.max_bytes, int(declared)))
            await response(scope, receive, send)
            return
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail=_too_large(self.max_bytes))
            return message

        await self.app(scope, limited, send)
