"""The one place where roles are checked: ``Depends(require("admin", "pos"))`` on a route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import service
from service.auth.errors import InvalidApiKey, MissingApiKey, RoleNotAllowed
from service.auth.rules import Principal, role_allowed

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer lk_…`")


async def authenticate(request: Request) -> Principal:
    """The caller's principal, from the bearer key; cached on the request."""
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return principal
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if not header:
        raise MissingApiKey("Send an API key as `Authorization: Bearer <key>`.")
    if scheme.lower() != "bearer" or not secret.strip() or len(secret) > 200:
        raise InvalidApiKey("The Authorization header must be `Bearer <key>`.")
    principal = await service.authenticate(request.app.state.db, secret.strip())
    if principal is None:
        raise InvalidApiKey("The API key is not valid or has been revoked.")
    request.state.principal = principal
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    allowed = frozenset(roles)

    async def dependency(
        request: Request, _: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        principal = await authenticate(request)
        if not role_allowed(principal, allowed):
            raise RoleNotAllowed(f"A {principal.role} key may not do this; it needs {' or '.join(sorted(allowed))}.")
        return principal

    dependency.requires_api_key = True  # type: ignore[attr-defined]  # read by routing.UnitOfWorkRoute
    dependency.roles = allowed  # type: ignore[attr-defined]  # read by the fast answers (routing.FastPaths)
    return dependency


ADMIN = require("admin")
ANY_ROLE = require("admin", "pos", "app")
