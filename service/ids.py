"""Identifiers and codes.

IDs are opaque strings with a type prefix (``mem_…``, ``txn_…``). Codes that customers type or read out
(vouchers, gift cards, referrals) use an alphabet without look-alike characters.
"""

from __future__ import annotations

import secrets

# Crockford-like: digits and upper-case letters without 0/O, 1/I/L, U. 30 symbols, ~4.9 bits each.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """``new_id("mem") -> "mem_4k9x…"``: 20 random symbols (100 bits)."""
    return f"{prefix}_{''.join(secrets.choice(_ID_ALPHABET) for _ in range(20))}"


def random_code(length: int = 13) -> str:
    """A code of ``length`` symbols from :data:`CODE_ALPHABET`; 13 symbols carry 63.8 bits of randomness."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def normalize_code(code: str) -> str:
    """What a cashier typed, as stored: upper case, spaces and dashes dropped."""
    return code.strip().upper().replace("-", "").replace(" ", "")
