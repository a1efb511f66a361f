"""API keys: create, list, revoke, and authenticate a bearer token."""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record as audit
from service.auth import repository, rules
from service.auth.errors import KeyRoleTakesNoStore, PosKeyNeedsStore
from service.auth.models import ApiKey
from service.auth.rules import Principal
from service.auth.schemas import ApiKeyCreate
from service.clock import Clock
from service.db import Database
from service.errors import NotFound
from service.ids import new_id
from service.program import repository as program_repository
from service.program.errors import StoreNotFound

# Authenticated keys are remembered briefly so a request costs no key query. A revocation is seen at once by
# the process that made it and within this many seconds by the others.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, Principal | None]] = {}
# The hashes of the keys this process revoked, refused before the cache is asked: a request authenticating while
# the revocation was being written read the key as active and cached it for CACHE_SECONDS after the 204.
_revoked: set[str] = set()
log = logging.getLogger("service.auth")


async def create(
    session: AsyncSession, body: ApiKeyCreate, clock: Clock, *, actor: str | None = None
) -> tuple[ApiKey, str]:
    if body.role == "pos" and not body.store_id:
        raise PosKeyNeedsStore("A pos key must name the store it serves (store_id).")
    if body.role != "pos" and body.store_id:
        raise KeyRoleTakesNoStore("Only a pos key is bound to a store; leave store_id out for admin and app keys.")
    if body.store_id and await program_repository.get_store(session, body.store_id) is None:
        raise StoreNotFound(f"There is no store {body.store_id!r}.")
    secret = rules.new_secret()
    key = ApiKey(
        id=new_id("key"), key_hash=rules.hash_key(secret), prefix=secret[:10], role=body.role,
        store_id=body.store_id, name=body.name, created_at=clock.now(),
    )
    await repository.add(session, key)
    await audit(session, clock, actor=actor, action="api_key.created", target=key.id,
                data={"role": key.role, "store_id": key.store_id, "name": key.name})
    return key, secret


async def ensure_bootstrap(session: AsyncSession, secret: str, clock: Clock, *, retire_others: bool = False) -> None:
    """Make sure the configured bootstrap admin key exists; with ``retire_others`` (a server's start), retire the
    bootstrap keys configured before it: a changed ``LOYALTY_BOOTSTRAP_ADMIN_KEY`` (a leaked key rotated, the
    development key replaced) left the old one an active admin key. Safe when several workers start at once."""
    key_hash = rules.hash_key(secret)
    now = clock.now()
    key = ApiKey(id=rules.bootstrap_key_id(key_hash), key_hash=key_hash, prefix=secret[:rules.BOOTSTRAP_PREFIX_CHARS],
                 role="admin", name="bootstrap", created_at=now)
    await repository.add_if_absent(session, key)
    if not retire_others:
        return
    for retired in await repository.revoke_bootstrap_keys_but(session, key_hash, now):
        log.warning("bootstrap admin key %s revoked: LOYALTY_BOOTSTRAP_ADMIN_KEY names another key now", retired)
        await audit(session, clock, actor="bootstrap", action="api_key.revoked", target=retired)


async def revoke(session: AsyncSession, key_id: str, clock: Clock, *, actor: str | None = None) -> None:
    key = await repository.get(session, key_id)
    if key is None:
        raise NotFound(f"There is no API key {key_id!r}.")
    await repository.revoke(session, key_id, clock.now())
    _revoked.add(key.key_hash)
    _cache.pop(key.key_hash, None)
    await audit(session, clock, actor=actor, action="api_key.revoked", target=key_id)


async def authenticate(db: Database, secret: str) -> Principal | None:
    """The key's principal, from this process's copy when it is recent (no session is opened then)."""
    key_hash = rules.hash_key(secret)
    if key_hash in _revoked:
        return None
    now = time.monotonic()
    cached = _cache.get(key_hash)
    if cached and cached[0] > now:
        return cached[1]
    async with db.session(write=False) as session:
        key = await repository.find_active_by_hash(session, key_hash)
    principal = Principal(key.id, key.role, key.store_id) if key else None
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key_hash] = (now + CACHE_SECONDS, principal)
    return principal


def forget_cached_keys() -> None:
    _cache.clear()
    _revoked.clear()
