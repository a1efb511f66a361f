"""Identifiers and codes.

IDs are opaque strings with a type prefix (``mem_…``, ``txn_…``). Codes that customers type or read out
(vouchers, gift cards, referrals) use an alphabet without look-alike characters.
"""

from __future__ import annotations

import secrets
import unicodedata

# Crockford-like: digits and upper-case letters without 0/O, 1/I/L, U. 30 symbols, ~4.9 bits each.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _draw(alphabet: str, length: int) -> str:
    """``length`` symbols drawn uniformly from ``alphabet`` (at most 256 symbols) with the OS's CSPRNG: random bytes,
    rejecting those at or above the largest multiple of the alphabet's size so that every symbol is equally likely.
    The same distribution as ``secrets.choice`` per symbol, about ten times faster (bulk issue draws 10,000)."""
    size = len(alphabet)
    limit = 256 - 256 % size
    symbols: list[str] = []
    while len(symbols) < length:
        symbols.extend(alphabet[b % size] for b in secrets.token_bytes(length - len(symbols) + 4) if b < limit)
    return "".join(symbols[:length])


def new_id(prefix: str) -> str:
    """``new_id("mem") -> "mem_4k9x…"``: 20 random symbols (100 bits)."""
    return f"{prefix}_{_draw(_ID_ALPHABET, 20)}"


def random_code(length: int = 13) -> str:
    """A code of ``length`` symbols from :data:`CODE_ALPHABET`; 13 symbols carry 63.8 bits of randomness."""
    return _draw(CODE_ALPHABET, length)


def normalize_code(code: str) -> str:
    """What a cashier typed, as stored: compatibility forms folded (NFKC: the full-width letters and digits a CJK
    input method types), upper case, spaces and dashes dropped."""
    return unicodedata.normalize("NFKC", code).strip().upper().replace("-", "").replace(" ", "")
