"""Who may do what: pure decisions over a principal."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "lk_"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: str
    store_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def new_secret() -> str:
    """A fresh API key: ``lk_`` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bootstrap_key_id(key_hash: str) -> str:
    """The bootstrap key's id, the same in every process that starts with it; from a digest of its hash rather
    than its hash itself, which a listing would show a part of."""
    return "key_bootstrap_" + hashlib.sha256(b"bootstrap key id\0" + key_hash.encode()).hexdigest()[:16]


# What a listing shows of the bootstrap key: a person may choose it, short, so less of it than of a key made here.
BOOTSTRAP_PREFIX_CHARS = 4


def hash_key(key: str) -> str:
    """Keys are random with 256 bits of entropy, so a plain SHA-256 is a safe one-way hash for them
    (slow password hashes exist for low-entropy secrets chosen by people)."""
    return hashlib.sha256(key.encode()).hexdigest()


def role_allowed(principal: Principal, roles: frozenset[str]) -> bool:
    return principal.role in roles


def store_allowed(principal: Principal, store_id: str | None) -> bool:
    """A pos key reaches only its own store's transactions; admin and app keys are not bound to a store."""
    return principal.role != "pos" or principal.store_id == store_id


def bound_store(principal: Principal) -> str | None:
    """The one store whose transactions a key may read (a pos key's), or None for every store (admin, app)."""
    return principal.store_id if principal.role == "pos" else None
