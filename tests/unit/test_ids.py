"""Codes and ids: the alphabet, the length, and symbols drawn uniformly."""

from __future__ import annotations

import math
from collections import Counter

from service.ids import CODE_ALPHABET, new_id, normalize_code, random_code


def test_codes_use_the_alphabet_without_look_alikes_and_carry_at_least_60_bits():
    assert not set(CODE_ALPHABET) & set("01OIL")
    assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET) == 30
    code = random_code()
    assert len(code) == 13 and set(code) <= set(CODE_ALPHABET)
    assert 13 * math.log2(len(CODE_ALPHABET)) >= 60
    assert len(random_code(40)) == 40
    assert new_id("vch").startswith("vch_") and len(new_id("vch")) == 24
    assert normalize_code(" ab-cd ef ") == "ABCDEF"


def test_symbols_are_drawn_uniformly():
    counts = Counter("".join(random_code(30) for _ in range(3000)))  # 90,000 symbols, 3,000 expected each
    assert set(counts) == set(CODE_ALPHABET)
    chi2 = sum((n - 3000) ** 2 / 3000 for n in counts.values())
    assert chi2 < 80  # 29 degrees of freedom: p < 1e-6 of a false alarm; a bias of 256 % 30 would show at ~300
