"""Members: enroll, read, change, erase, look up."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service import idempotency
from service.audit import record as audit
from service.auth.errors import RoleNotAllowed
from service.auth.rules import Principal
from service.checkout.rules import EVERY_SALE_LOCKS
from service.clock import Clock
from service.db import Database
from service.errors import ServiceError, ValidationFailed
from service.events import service as events
from service.ids import new_id, normalize_code, random_code
from service.ledger import service as ledger
from service.members import repository, rules
from service.members.errors import (
    InvalidCardNumber,
    InvalidReferralCode,
    LookupNeedsOneKey,
    MemberErased,
    MemberExists,
    MemberNotFound,
    SelfReferral,
)
from service.members.models import Member
from service.members.schemas import MemberCreate, MemberPublic, MemberUpdate
from service.program import rules as program_rules
from service.program import service as program_service
from service.program.schemas import ProgramPublic
from service.referrals import rules as referral_rules
from service.tiers import service as tiers

DEFAULT_LOCALE = "en"
REFERRAL_CODE_LENGTH = 8


def _phone(raw: str | None, region: str, *, given_in: tuple[str, ...] = ("body",)) -> str | None:
    """The phone in E.164; a 422 that names where it was given (the body's ``phone``, a look-up's query
    parameter, a sale's ``member``)."""
    if raw is None:
        return None
    try:
        return rules.normalize_phone(raw, region)
    except ValueError as exc:
        raise ValidationFailed(f"phone: {raw!r} is not a valid phone number",
                               errors=[{"loc": [*given_in, "phone"], "msg": str(exc)}]) from exc


def _birthday_not_in_future(birthday, clock: Clock) -> None:
    """Checked against the service's clock (not the machine's date), so tests and ``--as-of`` agree."""
    if birthday is not None and birthday > clock.now().date():
        raise ValidationFailed("birthday: cannot be in the future",
                               errors=[{"loc": ["body", "birthday"], "msg": "cannot be in the future"}])


async def enroll(session: AsyncSession, body: MemberCreate, clock: Clock, *, region: str,
                 principal: Principal | None = None) -> Member:
    """Enroll a member. An enrolment made with an admin key through the API (``principal``) is written to the
    audit log, with the fields it set (not their values), as an update is: DESIGN §7's "every admin change". An
    import's enrolments are not, one by one: the import is the operator's, run from the command line."""
    _birthday_not_in_future(body.birthday, clock)
    now = clock.now()
    phone = _phone(body.phone, region)
    email_normalized = rules.normalize_email(str(body.email)) if body.email else None
    referred_by = None
    if body.referral_code:
        referrer = await repository.by_referral_code(session, normalize_code(body.referral_code))
        if referrer is None or referrer.status != "active":
            raise InvalidReferralCode(f"No member has the referral code {body.referral_code!r}.")
        if referral_rules.self_referral((referrer.phone, referrer.email_normalized), (phone, email_normalized)):
            raise SelfReferral("This referral code belongs to the member enrolling (same phone or email).")
        referred_by = referrer.id
    member = Member(
        id=new_id("mem"), card_number=rules.new_card_number(), name=body.name, phone=phone,
        email=str(body.email) if body.email else None, email_normalized=email_normalized,
        birthday=body.birthday, locale=body.locale, marketing_consent=body.marketing_consent,
        external_ref=body.external_ref, referral_code=random_code(REFERRAL_CODE_LENGTH), referred_by=referred_by,
        enrolled_at=now, updated_at=now,
    )
    for _ in range(3):  # a fresh card number or referral code may (very rarely) collide: draw again
        if await repository.add(session, member):
            # What every sale locks, created now in the enrolment's round trips, not under the first sale's locks.
            await ledger.open_accounts(session, member.id, EVERY_SALE_LOCKS, now)
            await tiers.open_state(session, member.id, now)
            await events.emit(session, "member.enrolled", {"member_id": member.id, "referred_by": referred_by},
                              at=now, member_id=member.id)
            if principal is not None and principal.role == "admin":
                await audit(session, clock, actor=principal.key_id, action="member.enrolled", target=member.id,
                            data={"fields": sorted(body.model_fields_set)})
            return member
        await _raise_if_duplicate(session, member)
        member.card_number = rules.new_card_number()
        member.referral_code = random_code(REFERRAL_CODE_LENGTH)
    raise MemberExists("Could not allocate a card number; try again.")


async def _raise_if_duplicate(session: AsyncSession, member: Member) -> None:
    fields = await repository.conflicting(session, member)
    if fields:
        raise MemberExists(f"Another member already has this {' and '.join(fields)}.", fields=fields)


async def get(session: AsyncSession, member_id: str, *, lock: bool = False) -> Member:
    member = await repository.get(session, member_id, lock=lock)
    if member is None:
        raise MemberNotFound(f"There is no member {member_id!r}.")
    return member


async def get_taking_value(session: AsyncSession, member_id: str) -> Member:
    """The member, for an operation that gives them new value (a top-up, points added, a voucher): an erased
    member takes none (409 ``member_erased``). What an erased member holds can still leave: a cash-out pays
    the wallet back, a negative adjustment writes points off.

    The status is read under a share lock on the member's row, which the operation holds to its end, so an
    erasure runs wholly before or wholly after it: value never lands on a member erased meanwhile. A caller
    that locks the member's ledger accounts calls this after them (a sale holding those accounts may update
    the member's row: taking the row first could deadlock with it)."""
    member = await get(session, member_id)
    if await repository.status_shared(session, member_id) == "erased":
        raise MemberErased(f"Member {member_id} was erased and takes no new value; what they hold can still be "
                           "cashed out or written off.")
    return member


async def update(session: AsyncSession, member_id: str, body: MemberUpdate, clock: Clock, *, region: str,
                 principal: Principal) -> Member:
    """The profile fields the body names. A change made with an admin key is written to the audit log, by the
    names of the fields it changed (never their values: the log outlives an erasure). The member's row is locked
    first, as an erasure locks it: an edit and an erasure run one after the other, so no edit lands on an erased
    member and no erasure misses a field an edit was setting."""
    refused = rules.fields_refused_to(principal.role, body.model_fields_set)
    if refused:
        raise RoleNotAllowed(f"A till may not change a member's {' or '.join(refused)}: the member changes it in "
                             "the app.")
    member = await get(session, member_id, lock=True)
    if member.status == "erased":
        raise MemberErased("This member's personal data was erased; the record can no longer be changed.")
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    _birthday_not_in_future(changes.get("birthday"), clock)
    if "name" in changes and changes["name"] is None:
        raise ValidationFailed("name: cannot be cleared", errors=[{"loc": ["body", "name"], "msg": "required"}])
    if "phone" in changes:
        changes["phone"] = _phone(changes["phone"], region)
    if "email" in changes:
        email = changes["email"]
        changes["email"] = str(email) if email else None
        changes["email_normalized"] = rules.normalize_email(str(email)) if email else None
    changes["updated_at"] = clock.now()
    if not await repository.apply_changes(session, member, changes):
        wanted = Member(id=member_id, phone=changes.get("phone"), email_normalized=changes.get("email_normalized"),
                        external_ref=changes.get("external_ref"))
        await _raise_if_duplicate(session, wanted)
        raise MemberExists("Another member already has these details.")
    if principal.role == "admin":
        fields = sorted(body.model_fields_set)
        await audit(session, clock, actor=principal.key_id, action="member.updated", target=member_id,
                    data={"fields": fields})
    return member


async def erase(session: AsyncSession, member_id: str, clock: Clock, *, principal: Principal) -> None:
    """Clear every personal field and keep the member's ledger (balances stay accounted for). The enrolment's
    answer kept for replays is rewritten to the member as they now are (``idempotency.scrub``). The member's row
    is locked first and read as committed (see :func:`update`).

    Erasing an erased member changes nothing of the member (no audit entry, no event) but rewrites the kept
    answers again: an erasure before migration 0013 left them whole, and asking again mends that."""
    member = await get(session, member_id, lock=True)
    if member.status == "erased":
        await _scrub_kept_answers(session, member, principal)
        return
    now = clock.now()
    member.erased_ref = rules.erased_ref(member.external_ref) if member.external_ref else None
    for field in ("name", "phone", "email", "email_normalized", "birthday", "locale", "marketing_consent",
                  "external_ref"):
        setattr(member, field, None)
    member.status = "erased"
    member.erased_at = now
    member.updated_at = now
    await session.flush()
    await _scrub_kept_answers(session, member, principal)
    await audit(session, clock, actor=principal.key_id, action="member.erased", target=member_id)
    await events.emit(session, "member.erased", {"member_id": member_id}, at=now, member_id=member_id)


async def _scrub_kept_answers(session: AsyncSession, member: Member, principal: Principal) -> None:
    """Every answer kept for replays that holds the member (their enrolment's) becomes the erased member's."""
    erased = to_public(member, await program_service.get(session), principal)
    await idempotency.scrub(session, member.id, erased.model_dump_json().encode())


_SALE = ("body", "member")  # where a sale names its member


def _lookup_key(card_number: str | None, phone: str | None, email: str | None, region: str, *,
                given_in: tuple[str, ...] = ("query",)) -> dict[str, str]:
    """The one column a look-up names and its value, normalized as stored; ``given_in`` is where the request
    gave it (the look-up's query, a sale's ``member``), for an error's ``loc``."""
    given = [k for k, v in {"card_number": card_number, "phone": phone, "email": email}.items() if v]
    if len(given) != 1:
        raise LookupNeedsOneKey("Give exactly one of card_number, phone or email.", errors=[
            {"loc": ["query", name], "msg": "give exactly one of card_number, phone or email"}
            for name in given or ("card_number", "phone", "email")])
    if card_number:
        number = rules.normalize_card_number(card_number)
        if not rules.luhn_valid(number):
            raise InvalidCardNumber(f"Card number {card_number!r} is not valid: check the digits and try again.")
        return {"card_number": number}
    if phone:
        return {"phone": _phone(phone, region, given_in=given_in)}
    return {"email_normalized": rules.normalize_email(email or "")}


async def lookup_public(session: AsyncSession, principal: Principal, *, card_number: str | None,
                        phone: str | None, email: str | None, region: str, now: datetime) -> list[MemberPublic]:
    """The look-up endpoint's answer: as :func:`lookup`, read as plain rows (it changes nothing). A tier review
    fallen due is replayed in memory for the answer, as the quote replays it (``tiers.standing``); the member's
    next sale, read by id or ``loyalty sweep`` writes it."""
    found, versions = await repository.find_active_rows(session, with_review=True,
                                                        **_lookup_key(card_number, phone, email, region))
    if not found:
        return []
    program_service.remember_versions(session, versions)
    program = await program_service.get(session)  # its versions came with the members: no read
    members = []
    for row in found:
        if _review_due(row, now):
            row = SimpleNamespace(**{**row._asdict(), "tier_code": (await tiers.standing(session, row, program,
                                                                                          now)).code})
        members.append(to_public(row, program, principal))
    return members


async def lookup_public_alone(db: Database, principal: Principal, *, card_number: str | None, phone: str | None,
                              region: str, now: datetime) -> list[MemberPublic] | None:
    """:func:`lookup_public`'s answer for a till's look-up (by card number or phone), read without a session
    (``Database.fetch_alone``): the look-up's fast path (``routes.lookup_members_alone``). None when the answer
    needs a session: a tier review fell due, or the program's version is new to this process. Raises as
    :func:`lookup_public` for a key that cannot be looked up."""
    found = await repository.find_active_rows_alone(db, **_lookup_key(card_number, phone, None, region))
    if not found:
        return []
    program = program_service.parsed(found[0].program_version)
    if program is None or any(_review_due(row, now) for row in found):
        return None
    return [to_public(row, program, principal) for row in found]


def _review_due(row: Any, now: datetime) -> bool:
    return row.tier_review_at is not None and row.tier_review_at <= now


def prefetch_for_checkout(session: AsyncSession, *, member_id: str | None = None, card_number: str | None = None,
                          phone: str | None = None, region: str) -> None:
    """Announce :func:`find_for_checkout`'s read (``db.prefetch``): it goes out with the request's next read, a
    named voucher's screening. A key that cannot be looked up announces nothing; the look-up itself says why,
    in its turn."""
    if member_id:
        repository.prefetch_with_versions(session, member_id)
        return
    try:
        where = _lookup_key(card_number, phone, None, region, given_in=_SALE)
    except ServiceError:
        return
    repository.prefetch_active_rows(session, **where)


async def find_for_checkout(session: AsyncSession, *, member_id: str | None = None,
                            card_number: str | None = None, phone: str | None = None,
                            region: str) -> SimpleNamespace:
    """The member a till names by id, card number or phone; 404 ``member_not_found`` if none is active.

    A copy of the member's columns (attributes by name, as the ORM object's), read without the ORM: it costs
    about a third of the ORM object's CPU. The checkout writes nothing to the member through it; a tier change
    is written by the tiers domain's own statement (``tiers.service``), which sets the copy's code too."""
    if member_id:
        member, versions = await repository.get_with_versions(session, member_id)
        found = [member] if member is not None and member.status == "active" else []
    else:
        found, versions = await repository.find_active_rows(
            session, **_lookup_key(card_number, phone, None, region, given_in=_SALE))
    program_service.remember_versions(session, versions)  # as in lookup
    if not found:
        raise MemberNotFound("No active member matches; check the card or phone number.")
    return SimpleNamespace(**found[0]._asdict())


def to_public(member: Member | Any, program: ProgramPublic, principal: Principal) -> MemberPublic:
    """The member (an ORM object or a row of its columns) as the caller may see it: a till (pos key) sees phone
    and email masked, enough to confirm them with the customer, and no ``external_ref`` (null): the person's key
    in the retailer's CRM identifies them in other systems, and nothing a till does needs it."""
    masked = principal.role == "pos"
    profile = rules.Profile(member.name, member.phone, member.email, member.birthday, member.locale,
                            member.marketing_consent)
    return MemberPublic(
        id=member.id, card_number=member.card_number, name=member.name,
        phone=rules.mask_phone(member.phone) if masked else member.phone,
        email=rules.mask_email(member.email) if masked else member.email,
        birthday=member.birthday, locale=member.locale or DEFAULT_LOCALE,
        marketing_consent=member.marketing_consent, external_ref=None if masked else member.external_ref,
        status=member.status,
        enrolled_at=member.enrolled_at, tier=program_rules.tier_code_of(program.tiers, member.tier_code),
        referral_code=member.referral_code, profile_completeness=rules.profile_completeness(profile),
    )
