"""Member decisions: card numbers, phone and email normal forms, masking, profile completeness."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import date

import phonenumbers
from pydantic.networks import validate_email

CARD_PREFIX = "8"
CARD_LENGTH = 16


# What a till may not change on a member it serves: it sees phone and email masked (DESIGN §7), so it could not
# tell whose contact it overwrites, and the contact is how the member is found and reached. The member changes
# them through the app; an admin can too.
CONTACT_FIELDS = frozenset({"phone", "email", "external_ref"})


def fields_refused_to(role: str, fields: set[str]) -> list[str]:
    """The profile fields a key of ``role`` may not change, of those it tried to."""
    return sorted(fields & CONTACT_FIELDS) if role == "pos" else []


def luhn_check_digit(digits: str) -> str:
    """The Luhn digit to append to ``digits`` (ISO/IEC 7812)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # doubled: every second digit from the right, starting next to the check digit
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isascii() and number.isdigit() and len(number) >= 2 and luhn_check_digit(number[:-1]) == number[-1]


def new_card_number() -> str:
    body = CARD_PREFIX + "".join(str(secrets.randbelow(10)) for _ in range(CARD_LENGTH - 2))
    return body + luhn_check_digit(body)


def normalize_card_number(raw: str) -> str:
    """Digits only: cards are printed in groups (``8123 4567 …``)."""
    return raw.replace(" ", "").replace("-", "")


def normalize_phone(raw: str, default_region: str) -> str:
    """E.164 (``+4915112345678``); raises ``ValueError`` for what is not a possible phone number."""
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def erased_ref(external_ref: str) -> str:
    """What an erasure keeps of the member's ``external_ref``: its SHA-256 digest, enough to recognize the CRM's
    reference when an import brings it again. Unkeyed, it is no secret: a reference short or regular enough to
    guess is found from it by trying them all (README, Members)."""
    return hashlib.sha256(b"erased external_ref\0" + external_ref.encode()).hexdigest()


def normalize_email(email: str) -> str:
    """An email address as it is matched: as enrolment validates it (pydantic's ``EmailStr``: Unicode composed,
    a punycode domain decoded), then case-insensitively (as every mail system a customer uses does). So the
    address typed at enrolment finds the member, in either Unicode form: the look-up only lowercased what was
    typed, and ``li\u0301na@`` or ``anna@xn--bcher-kva.de`` found no one (until 2026-12-08). A value that is no
    address is only lowercased: it matches no one."""
    with contextlib.suppress(ValueError):
        email = validate_email(email)[1]
    return email.strip().lower()


def mask_phone(phone: str | None) -> str | None:
    """What a till may show of a number: its country code and the last digits of the number within it, at most
    four and at most half of them (``+4915112345678`` -> ``+49*******5678``, ``+6834002`` -> ``+683**02``).
    Masked as text (the first three characters and the last four), a short number showed whole: Niue's
    ``+6834002`` as ``+68*4002`` (until 2026-12-08)."""
    if not phone:
        return phone
    try:
        parsed = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException:
        return "*" * max(len(phone) - 4, 0) + phone[-4:] if len(phone) > 8 else "*" * len(phone)
    national = str(parsed.national_number)
    shown = min(4, len(national) // 2)
    return f"+{parsed.country_code}" + "*" * (len(national) - shown) + national[len(national) - shown:]


def mask_email(email: str | None) -> str | None:
    """``jane.doe@example.com`` -> ``j***@example.com``."""
    if not email or "@" not in email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str | None
    phone: str | None
    email: str | None
    birthday: date | None
    locale: str | None
    marketing_consent: bool | None


# What each answered field adds to profile completeness (sums to 100).
COMPLETENESS_WEIGHTS = {"name": 20, "phone": 20, "email": 20, "birthday": 20, "locale": 10, "marketing_consent": 10}


def profile_completeness(profile: Profile) -> int:
    """0-100: the share of the profile the member has filled in, by the weights above."""
    return sum(w for field, w in COMPLETENESS_WEIGHTS.items() if getattr(profile, field) not in (None, ""))
