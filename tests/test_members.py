"""Members through HTTP: enroll, get, patch, erase, exact look-ups, uniqueness, masking, referrals."""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from datetime import date, datetime, timedelta
from unittest.mock import AsyncMock

import pytest
from sqlalchemy import func, select, text

from service import idempotency
from service.members import service as members_service
from service.members.models import Member
from tests import factories as f
from tests.factories import assert_problem, create_key, create_store, enroll, unique_email, unique_phone


def luhn_ok(number: str) -> bool:
    """An independent Luhn check (not the service's own function)."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def with_wrong_check_digit(card: str) -> str:
    return card[:-1] + str((int(card[-1]) + 1) % 10)


async def member_count(app) -> int:
    async with app.state.db.session(write=False) as session:
        return (await session.execute(select(func.count()).select_from(Member))).scalar_one()


async def lookup(client, **params):
    return await client.get("/v1/members", params=params)


async def found_ids(client, **params) -> list[str]:
    r = await lookup(client, **params)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return [m["id"] for m in r.json()["data"]]


# --- enroll -------------------------------------------------------------------------------------------------------

async def test_enroll_returns_the_member(client):
    phone, email = unique_phone(), unique_email()
    r = await client.post("/v1/members", json={
        "name": "Jane Doe", "phone": phone, "email": email, "birthday": "1990-04-01", "locale": "zh-CN",
        "marketing_consent": True, "external_ref": "crm-1"})
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["id"].startswith("mem_") and len(m["id"]) > 8
    assert m["card_number"].isdigit() and len(m["card_number"]) >= 12 and luhn_ok(m["card_number"])
    assert m["name"] == "Jane Doe" and m["phone"] == phone and m["email"] == email
    assert m["birthday"] == "1990-04-01" and m["locale"] == "zh-CN" and m["marketing_consent"] is True
    assert m["external_ref"] == "crm-1"
    assert m["status"] == "active"
    assert m["tier"] == "member"
    assert m["referral_code"] and len(m["referral_code"]) >= 6
    assert m["profile_completeness"] == 100
    enrolled_at = datetime.fromisoformat(m["enrolled_at"])
    assert enrolled_at.utcoffset() is not None and enrolled_at.utcoffset().total_seconds() == 0


async def test_enroll_with_name_only_gets_defaults(client):
    r = await client.post("/v1/members", json={"name": "  Ann  "})
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["name"] == "Ann"
    assert m["phone"] is None and m["email"] is None and m["birthday"] is None
    assert m["locale"] == "en"
    assert m["profile_completeness"] == 20


async def test_every_member_gets_its_own_card_and_referral_code(client):
    members = [await enroll(client) for _ in range(5)]
    assert len({m["card_number"] for m in members}) == 5
    assert len({m["referral_code"] for m in members}) == 5
    assert len({m["id"] for m in members}) == 5
    assert all(luhn_ok(m["card_number"]) for m in members)


COMPLETENESS = [
    ({}, 20),
    ({"phone": True}, 40),
    ({"email": True}, 40),
    ({"phone": True, "email": True}, 60),
    ({"phone": True, "email": True, "birthday": "1980-02-29"}, 80),
    ({"locale": "en"}, 30),
    ({"marketing_consent": False}, 30),
    ({"phone": True, "email": True, "birthday": "1980-02-29", "locale": "en", "marketing_consent": False}, 100),
]


async def test_profile_completeness(client):
    for fields, expected in COMPLETENESS:
        body = {"name": "Jane"} | fields
        if "phone" in fields:
            body["phone"] = unique_phone()
        if "email" in fields:
            body["email"] = unique_email()
        r = await client.post("/v1/members", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["profile_completeness"] == expected, fields


async def test_profile_completeness_follows_changes(client):
    m = await enroll(client)
    assert m["profile_completeness"] == 60
    r = await client.patch(f"/v1/members/{m['id']}", json={"birthday": "2000-01-01"})
    assert r.json()["profile_completeness"] == 80
    r = await client.patch(f"/v1/members/{m['id']}", json={"phone": None, "email": None})
    assert r.json()["profile_completeness"] == 40


async def test_tier_is_the_first_tier_of_the_program(client):
    program = (await client.get("/v1/program")).json()
    program["tiers"][0]["code"] = "basic"
    assert (await client.put("/v1/program", json=program)).status_code == 200
    assert (await enroll(client))["tier"] == "basic"


# --- get ----------------------------------------------------------------------------------------------------------

async def test_get_member(client):
    m = await enroll(client, birthday="1985-12-31")
    r = await client.get(f"/v1/members/{m['id']}")
    assert r.status_code == 200
    assert r.json() == m


async def test_unknown_member_is_404(client):
    await enroll(client)
    for member_id in ("mem_doesnotexist0000000", "x", "mem_" + "a" * 60):
        assert_problem(await client.get(f"/v1/members/{member_id}"), 404, "member_not_found")
        assert_problem(await client.patch(f"/v1/members/{member_id}", json={"name": "X"}), 404, "member_not_found")
        assert_problem(await client.delete(f"/v1/members/{member_id}"), 404, "member_not_found")


# --- patch --------------------------------------------------------------------------------------------------------

async def test_patch_changes_only_what_is_sent(client):
    m = await enroll(client, birthday="1990-01-01", locale="en", marketing_consent=True, external_ref="r-1")
    r = await client.patch(f"/v1/members/{m['id']}", json={"name": "Janet"})
    assert r.status_code == 200, r.text
    assert r.json() == {**m, "name": "Janet"}
    new_phone, new_email = unique_phone(), unique_email()
    r = await client.patch(f"/v1/members/{m['id']}", json={
        "phone": new_phone, "email": new_email, "locale": "zh-CN", "marketing_consent": False,
        "birthday": "1991-02-03", "external_ref": "r-2"})
    assert r.status_code == 200, r.text
    after = r.json()
    assert (after["phone"], after["email"], after["locale"], after["marketing_consent"], after["birthday"],
            after["external_ref"]) == (new_phone, new_email, "zh-CN", False, "1991-02-03", "r-2")
    assert after["card_number"] == m["card_number"] and after["referral_code"] == m["referral_code"]
    assert (await client.get(f"/v1/members/{m['id']}")).json() == after
    # the old phone and email are free again, the new ones find the member
    assert await found_ids(client, phone=m["phone"]) == []
    assert await found_ids(client, phone=new_phone) == [m["id"]]
    assert await found_ids(client, email=new_email) == [m["id"]]


async def test_patch_with_empty_body_changes_nothing(client):
    m = await enroll(client)
    r = await client.patch(f"/v1/members/{m['id']}", json={})
    assert r.status_code == 200 and r.json() == m


async def test_patch_null_clears_optional_fields(client):
    m = await enroll(client, birthday="1990-01-01", locale="zh-CN", marketing_consent=True, external_ref="r-9")
    r = await client.patch(f"/v1/members/{m['id']}", json={
        "phone": None, "email": None, "birthday": None, "locale": None, "marketing_consent": None,
        "external_ref": None})
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["phone"] is None and after["email"] is None and after["birthday"] is None
    assert after["marketing_consent"] is None and after["external_ref"] is None
    assert after["locale"] == "en"
    assert after["name"] == m["name"]
    assert after["profile_completeness"] == 20
    assert await found_ids(client, phone=m["phone"]) == []
    assert await found_ids(client, email=m["email"]) == []
    # a cleared phone can be used by someone else
    assert (await client.post("/v1/members", json={"name": "B", "phone": m["phone"]})).status_code == 201


async def test_name_cannot_be_cleared(client):
    m = await enroll(client)
    for body in ({"name": None}, {"name": ""}, {"name": "   "}):
        body = assert_problem(await client.patch(f"/v1/members/{m['id']}", json=body), 422, "validation_error")
        assert any("name" in e["loc"] for e in body["errors"])
    assert (await client.get(f"/v1/members/{m['id']}")).json()["name"] == m["name"]


@pytest.mark.parametrize("consent", ["T", "yes", "true", 1, 0, "0"])
async def test_consent_is_a_json_boolean_not_a_word_or_a_number(client, consent):
    """The schema says boolean: pydantic's lax mode would read "yes" or 1 as true, a consent nobody gave."""
    assert_problem(await client.post("/v1/members", json={"name": "A", "marketing_consent": consent}), 422,
                   "validation_error")
    m = await enroll(client)
    assert_problem(await client.patch(f"/v1/members/{m['id']}", json={"marketing_consent": consent}), 422,
                   "validation_error")
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m


async def test_patch_rejects_unknown_and_read_only_fields(client):
    m = await enroll(client)
    for body in ({"nmae": "typo"}, {"card_number": "8000000000000000"}, {"status": "erased"},
                 {"referral_code": "ABCDEFGH"}, {"tier": "gold"}, {"id": "mem_other"}):
        assert_problem(await client.patch(f"/v1/members/{m['id']}", json=body), 422, "validation_error")
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m


# --- erase --------------------------------------------------------------------------------------------------------

async def test_erase_clears_personal_data(client, app):
    m = await enroll(client, birthday="1990-01-01", locale="zh-CN", marketing_consent=True, external_ref="r-5")
    r = await client.delete(f"/v1/members/{m['id']}")
    assert r.status_code == 204 and r.content == b""
    r = await client.get(f"/v1/members/{m['id']}")
    assert r.status_code == 200
    erased = r.json()
    assert erased["status"] == "erased"
    for field in ("name", "phone", "email", "birthday", "marketing_consent", "external_ref"):
        assert erased[field] is None, field
    assert erased["id"] == m["id"] and erased["card_number"] == m["card_number"]
    async with app.state.db.session(write=False) as session:
        row = await session.get(Member, m["id"])
        assert row is not None  # kept, for the ledger
        assert (row.name, row.phone, row.email, row.email_normalized, row.birthday, row.locale,
                row.external_ref) == (None,) * 7
    assert await found_ids(client, card_number=m["card_number"]) == []
    assert await found_ids(client, phone=m["phone"]) == []
    assert await found_ids(client, email=m["email"]) == []


async def test_a_till_changes_a_profile_but_not_the_contact_it_sees_masked(client, make_client):
    store = (await create_store(client))["id"]
    till = make_client(await create_key(client, "pos", store))
    app_backend = make_client(await create_key(client, "app"))
    m = await enroll(client)
    for field, value in (("phone", unique_phone()), ("email", unique_email()), ("external_ref", "crm-1")):
        r = await till.patch(f"/v1/members/{m['id']}", json={"name": "Renamed", field: value})
        assert field in assert_problem(r, 403, "forbidden")["detail"]
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m  # nothing changed, not even the name
    r = await till.patch(f"/v1/members/{m['id']}", json={"name": "Renamed", "marketing_consent": True})
    assert r.status_code == 200 and r.json()["name"] == "Renamed"
    r = await app_backend.patch(f"/v1/members/{m['id']}", json={"phone": unique_phone()})
    assert r.status_code == 200, r.text


async def test_erasure_rewrites_the_enrolment_answer_kept_for_replays(client, app):
    body = {"name": "Grace Hopper", "phone": unique_phone(), "email": "grace@example.com", "birthday": "1906-12-09"}
    key = {"Idempotency-Key": "enrol-grace"}
    first = await client.post("/v1/members", json=body, headers=key)
    assert first.status_code == 201, first.text
    replay = await client.post("/v1/members", json=body, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == first.json()  # unchanged until...
    member = first.json()["id"]
    assert (await client.delete(f"/v1/members/{member}")).status_code == 204

    replay = await client.post("/v1/members", json=body, headers=key)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == (await client.get(f"/v1/members/{member}")).json()  # the member as they now are
    assert replay.json()["status"] == "erased" and replay.json()["name"] is None
    async with app.state.db.session(write=False) as session:
        kept = (await session.execute(text("SELECT response_body FROM idempotency_keys"))).scalars().all()
        hashes = (await session.execute(text("SELECT request_hash FROM idempotency_keys"))).scalars().all()
    assert kept and not any(b"Grace" in bytes(b) or b"grace@" in bytes(b) or b"1906" in bytes(b) for b in kept)
    # Nor a digest of the enrolment's body: it confirmed a guess of the person's details (the guessed body was
    # replayed, any other refused). The key now replays the erased member whatever the body.
    assert hashes == [idempotency.ERASED]
    guess = await client.post("/v1/members", json={**body, "name": "Someone Else"}, headers=key)
    assert guess.status_code == 201 and guess.json() == replay.json()


async def test_erasing_an_erased_member_again_rewrites_the_enrolment_answer_kept_whole(client, app):
    """An erasure before migration 0013 left the enrolment's kept answer whole, and a second DELETE returned early
    (the member was erased already), so nothing could mend it. A second DELETE rewrites it, answers 204 as the
    first, and adds no audit entry or event."""
    body = {"name": "Grace Hopper", "phone": unique_phone(), "email": "grace@example.com", "birthday": "1906-12-09"}
    key = {"Idempotency-Key": "enrol-grace-again"}
    first = await client.post("/v1/members", json=body, headers=key)
    assert first.status_code == 201, first.text
    member = first.json()["id"]
    assert (await client.delete(f"/v1/members/{member}")).status_code == 204
    async with app.state.db.transaction() as session:  # as an erasure before 0013 left it
        await session.execute(text("UPDATE idempotency_keys SET response_body = :body WHERE subject = :member"),
                              {"body": first.content, "member": member})
    assert (await client.post("/v1/members", json=body, headers=key)).json()["name"] == "Grace Hopper"
    events = (await client.get("/v1/events", params={"limit": 500})).json()["data"]
    audit = (await client.get("/v1/audit-log", params={"action": "member.erased", "target": member})).json()["data"]

    assert (await client.delete(f"/v1/members/{member}")).status_code == 204
    replay = await client.post("/v1/members", json=body, headers=key)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == (await client.get(f"/v1/members/{member}")).json()
    assert replay.json()["status"] == "erased" and replay.json()["name"] is None
    async with app.state.db.session(write=False) as session:
        kept = (await session.execute(text("SELECT response_body FROM idempotency_keys"))).scalars().all()
    assert kept and not any(b"Grace" in bytes(b) or b"grace@" in bytes(b) or b"1906" in bytes(b) for b in kept)
    assert (await client.get("/v1/events", params={"limit": 500})).json()["data"] == events
    assert (await client.get("/v1/audit-log", params={"action": "member.erased", "target": member})
            ).json()["data"] == audit and len(audit) == 1
    assert (await client.delete(f"/v1/members/{member}")).status_code == 204  # and again: nothing left to do


async def test_erased_member_cannot_be_changed(client):
    m = await enroll(client)
    assert (await client.delete(f"/v1/members/{m['id']}")).status_code == 204
    assert_problem(await client.patch(f"/v1/members/{m['id']}", json={"name": "Back"}), 409, "member_erased")
    assert (await client.get(f"/v1/members/{m['id']}")).json()["name"] is None
    assert (await client.delete(f"/v1/members/{m['id']}")).status_code == 204


@pytest.mark.postgres_only
@pytest.mark.parametrize("first", ["erase", "edit"])
async def test_a_profile_edit_and_an_erasure_run_one_after_the_other(client, app, first):
    """Both lock the member's row before reading it: an edit never lands on an erased member, and an erasure
    never misses a field an edit was setting. (They read unlocked before: 37 of 40 members edited and erased at
    once kept a phone or an email.)"""
    m = (await enroll(client, email=None))["id"]
    erase = lambda: client.delete(f"/v1/members/{m}")  # noqa: E731
    edit = lambda: client.patch(f"/v1/members/{m}", json={"phone": unique_phone(), "email": unique_email()})  # noqa: E731
    order = [erase, edit] if first == "erase" else [edit, erase]
    async with f.row_held(app, "SELECT id FROM members WHERE id = :m FOR UPDATE", m=m) as (release, waiting):
        earlier = asyncio.create_task(order[0]())
        await waiting(1)
        later = asyncio.create_task(order[1]())
        await waiting(2)
        await release()
        answers = [await earlier, await later]
    by_op = dict(zip([first, "edit" if first == "erase" else "erase"], answers, strict=True))
    assert by_op["erase"].status_code == 204
    if first == "erase":
        assert_problem(by_op["edit"], 409, "member_erased")
    else:
        assert by_op["edit"].status_code == 200, by_op["edit"].text
    async with app.state.db.transaction() as session:
        row = (await session.execute(select(Member.status, Member.name, Member.phone, Member.email,
                                            Member.email_normalized).where(Member.id == m))).one()
    assert tuple(row) == ("erased", None, None, None, None)


async def test_erased_members_details_are_free_for_a_new_member(client):
    m = await enroll(client, external_ref="r-7")
    assert (await client.delete(f"/v1/members/{m['id']}")).status_code == 204
    again = await enroll(client, phone=m["phone"], email=m["email"], external_ref="r-7")
    assert await found_ids(client, phone=m["phone"]) == [again["id"]]


# --- look-ups -----------------------------------------------------------------------------------------------------

async def test_lookup_by_card_number(client):
    m = await enroll(client)
    await enroll(client)
    card = m["card_number"]
    spaced = " ".join(card[i:i + 4] for i in range(0, len(card), 4))
    dashed = "-".join(card[i:i + 4] for i in range(0, len(card), 4))
    for form in (card, spaced, dashed):
        assert await found_ids(client, card_number=form) == [m["id"]], form
    r = await lookup(client, card_number=card)
    assert r.json()["data"][0] == m


async def test_lookup_by_card_number_with_wrong_check_digit_is_422(client):
    m = await enroll(client)
    assert_problem(await lookup(client, card_number=with_wrong_check_digit(m["card_number"])), 422,
                   "invalid_card_number")


async def test_lookup_by_malformed_card_number_is_422(client):
    for card in ("abc", "8", "1234-abcd", "+8123456789012345", "８１２３", "²²", "٨٧", "8123 4567 8901 234x"):
        r = await lookup(client, card_number=card)
        assert r.status_code == 422, (card, r.text)
        assert_problem(r, 422, "invalid_card_number")


async def test_lookup_by_unknown_valid_card_number_finds_nothing(client):
    await enroll(client)
    assert await found_ids(client, card_number="79927398713") == []


PHONE_FORMS = [
    ("+14155552671", "+14155552671"),
    ("+14155552671", "(415) 555-2671"),
    ("+14155552671", "415.555.2671"),
    ("+14155552671", "+1 415 555 2671"),
    ("(415) 555-2671", "+14155552671"),
    ("+44 20 7946 0958", "+442079460958"),
    ("+49 151 23456789", "+49-151-234-56789"),
]


async def test_lookup_by_phone_in_any_format(client):
    await enroll(client)
    for stored, typed in PHONE_FORMS:
        m = await enroll(client, phone=stored)
        assert m["phone"].startswith("+") and " " not in m["phone"]
        assert await found_ids(client, phone=typed) == [m["id"]], (stored, typed)
        assert (await client.delete(f"/v1/members/{m['id']}")).status_code == 204  # frees the number


async def test_phone_is_stored_as_e164(client):
    m = await enroll(client, phone="(415) 555-2671")
    assert m["phone"] == "+14155552671"
    m2 = await enroll(client, phone="+44 (0)20 7946 0959")
    assert m2["phone"] == "+442079460959"


async def test_lookup_by_email_ignores_case(client):
    m = await enroll(client, email="Jane.Doe@Example.COM")
    await enroll(client)
    assert m["email"].lower() == "jane.doe@example.com"
    for typed in ("jane.doe@example.com", "JANE.DOE@EXAMPLE.COM", "Jane.Doe@example.com"):
        assert await found_ids(client, email=typed) == [m["id"]], typed


async def test_lookup_by_email_finds_the_address_in_either_unicode_form(client):
    """Enrolment keeps an address as its validation writes it (Unicode composed, a punycode domain decoded); the
    look-up only lowercased what was typed, so the address given at enrolment, typed again, found no one."""
    decomposed = f"li\u0301na.{unique_email()}"  # an accent typed as a separate character
    punycode = f"anna.{unique_email().split('@')[0]}@xn--bcher-kva.de"
    for given, other in ((decomposed, unicodedata.normalize("NFC", decomposed)),
                         (punycode, punycode.replace("xn--bcher-kva", "b\u00fccher"))):
        m = await enroll(client, email=given)
        for typed in (given, other, other.upper()):
            assert await found_ids(client, email=typed) == [m["id"]], typed
    assert await found_ids(client, email="not an address") == []


async def test_names_in_any_script_are_kept_as_written(client):
    """Names are refused only for what cannot be printed (tests/test_errors.py); a right-to-left name keeps its
    direction marks."""
    for name in ("Zoë Ångström", "王芳", "\u200fמרים כהן", "Nguyễn Thị Minh Khai", "O'Brien-Smith"):
        r = await client.post("/v1/members", json={"name": name})
        assert r.status_code == 201 and r.json()["name"] == name, r.text


async def test_lookup_that_finds_nothing_is_an_empty_list(client):
    await enroll(client)
    assert await found_ids(client, email="nobody@example.com") == []
    assert await found_ids(client, phone="+14155550000") == []


LOOKUPS_WITHOUT_ONE_KEY = [
    {},
    {"card_number": "79927398713", "phone": "+14155552671"},
    {"phone": "+14155552671", "email": "a@example.com"},
    {"card_number": "79927398713", "email": "a@example.com"},
    {"card_number": "79927398713", "phone": "+14155552671", "email": "a@example.com"},
    {"email": ""},
    {"name": "Jane"},
]


async def test_lookup_needs_exactly_one_key(client):
    for params in LOOKUPS_WITHOUT_ONE_KEY:
        r = await lookup(client, **params)
        assert r.status_code == 422, params
        assert_problem(r, 422, "validation_error")


async def test_a_lookup_without_one_key_names_the_parameters_in_errors(client):
    """API.md: validation errors add `errors: [{loc, msg}]` (this one answered without them)."""
    body = assert_problem(await lookup(client, phone="+14155552671", email="a@example.com"), 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["query", "phone"], ["query", "email"]], body
    body = assert_problem(await client.get("/v1/members"), 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["query", n] for n in ("card_number", "phone", "email")], body


async def test_lookup_by_invalid_phone_is_422(client):
    for phone in ("12", "not a phone", "+1 000 000 0000", "+999 1234567", "555"):
        r = await lookup(client, phone=phone)
        assert r.status_code == 422, phone
        assert assert_problem(r, 422, "validation_error")["errors"][0]["loc"] == ["query", "phone"]


# The till's look-up by card or phone is answered by a fast path (``routing.FastPaths``) without FastAPI's routing
# or a session; anything it does not handle goes on to the route. Both must give the same answer.

async def test_the_fast_look_up_answers_what_the_route_answers(client, make_client, monkeypatch):
    member = await enroll(client, email="jane@example.com")
    other = await enroll(client)
    pos = make_client(await create_key(client, "pos", (await create_store(client))["id"]))
    app_key = make_client(await create_key(client, "app"))
    asks = [(caller, params) for caller in (client, pos, app_key) for params in (
        {"card_number": member["card_number"]}, {"phone": member["phone"]}, {"card_number": "79927398713"})]

    async def route_never_runs(*_args, **_kwargs):
        raise AssertionError("the route answered a look-up the fast path handles")

    with monkeypatch.context() as patch:
        patch.setattr(members_service, "lookup_public", route_never_runs)
        fast = [await caller.get("/v1/members", params=params) for caller, params in asks]
    with monkeypatch.context() as patch:
        patch.setattr(members_service, "lookup_public_alone", AsyncMock(return_value=None))  # every one to the route
        routed = [await caller.get("/v1/members", params=params) for caller, params in asks]
    for (_, params), a, b in zip(asks, fast, routed, strict=True):
        assert (a.status_code, a.content) == (b.status_code, b.content) == (200, a.content), (params, a.text, b.text)
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        assert a.headers["x-request-id"]
    assert fast[0].json()["data"] == [member] and fast[2].json()["data"] == []
    assert fast[3].json()["data"][0]["phone"] != member["phone"]  # masked for the till, as by the route
    assert other["id"] not in {m["id"] for r in fast for m in r.json()["data"]}
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/members",status="200"' in metrics


async def test_what_the_fast_look_up_leaves_alone_the_route_answers(client, make_client, monkeypatch):
    member = await enroll(client, email="jane@example.com")
    seen: list[dict] = []
    route = members_service.lookup_public

    async def routed(*args, **kwargs):
        seen.append({k: v for k, v in kwargs.items() if k in ("card_number", "phone", "email") and v})
        return await route(*args, **kwargs)

    monkeypatch.setattr(members_service, "lookup_public", routed)
    card = member["card_number"]
    assert (await lookup(client, email="jane@example.com")).json()["data"] == [member]
    assert_problem(await lookup(client, card_number=with_wrong_check_digit(card)), 422, "invalid_card_number")
    assert_problem(await lookup(client, card_number=card, phone=member["phone"]), 422, "validation_error")
    assert (await client.get(f"/v1/members?card_number={card}&card_number={card}")).json()["data"] == [member]
    assert_problem(await lookup(client, card_number="1" * 33), 422, "validation_error")  # past the route's limit
    assert seen == [{"email": "jane@example.com"}, {"card_number": with_wrong_check_digit(card)},
                    {"card_number": card, "phone": member["phone"]}, {"card_number": card}]
    assert_problem(await make_client(None).get("/v1/members", params={"card_number": card}), 401, "unauthorized")


async def test_a_fast_look_up_that_fails_unexpectedly_is_answered_by_the_route(client, app, monkeypatch, caplog):
    member = await enroll(client)
    monkeypatch.setattr(app.state.db, "fetch_alone", AsyncMock(side_effect=RuntimeError("connection lost")))
    with caplog.at_level(logging.WARNING, logger="service.routing"):
        r = await lookup(client, card_number=member["card_number"])
    assert r.status_code == 200 and r.json()["data"] == [member], r.text
    assert "the fast answer to /v1/members failed; the route answers" in caplog.text


@pytest.mark.postgres_only
async def test_a_fast_look_up_whose_kept_connection_was_lost_is_answered_and_the_next_reads_reconnect(
        client, app, caplog):
    """The look-up's connections stay checked out between reads (``Database.fetch_alone``). Their backends
    terminated, as when the server restarts: the look-up that meets one is answered by the route, and the next ones
    by the fast path again, on new connections."""
    member = await enroll(client)
    assert (await lookup(client, card_number=member["card_number"])).json()["data"] == [member]
    async with app.state.db.transaction() as session:
        kept = [pid for (pid,) in await session.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE '%AND members.card_number = $%'"))]
        assert kept, "no connection kept for the look-up"
        for pid in kept:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with caplog.at_level(logging.WARNING, logger="service.routing"):
        r = await lookup(client, card_number=member["card_number"])
    assert r.status_code == 200 and r.json()["data"] == [member], r.text
    assert "the fast answer to /v1/members failed; the route answers" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.routing"):
        for _ in range(3):
            assert (await lookup(client, card_number=member["card_number"])).json()["data"] == [member]
    assert "failed" not in caplog.text


# --- uniqueness ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "first", "second"), [
    ("phone", "+14155552671", "(415) 555-2671"),
    ("email", "jane@example.com", "JANE@Example.com"),
    ("external_ref", "crm-42", "crm-42"),
])
async def test_duplicate_on_enroll_is_409(client, app, field, first, second):
    await enroll(client, **{field: first})
    before = await member_count(app)
    body = assert_problem(await client.post("/v1/members", json={"name": "Other", field: second}), 409,
                          "member_exists")
    assert field in body["detail"]
    assert await member_count(app) == before


@pytest.mark.parametrize(("field", "first", "second"), [
    ("phone", "+14155552671", "415-555-2671"),
    ("email", "jane@example.com", "Jane@EXAMPLE.com"),
    ("external_ref", "crm-42", "crm-42"),
])
async def test_duplicate_on_patch_is_409(client, field, first, second):
    await enroll(client, **{field: first})
    other = await enroll(client)
    body = assert_problem(await client.patch(f"/v1/members/{other['id']}", json={field: second}), 409,
                          "member_exists")
    assert field in body["detail"]
    assert (await client.get(f"/v1/members/{other['id']}")).json() == other
    # and the member can still be changed afterwards
    r = await client.patch(f"/v1/members/{other['id']}", json={"name": "Still fine"})
    assert r.status_code == 200, r.text


async def test_patch_to_own_values_is_fine(client):
    m = await enroll(client, external_ref="mine")
    r = await client.patch(f"/v1/members/{m['id']}", json={
        "phone": m["phone"], "email": m["email"].upper(), "external_ref": "mine"})
    assert r.status_code == 200, r.text


async def test_invalid_phone_is_422(client, app):
    m = await enroll(client)
    for phone in ("12", "+1 000 000 0000", "555-0000", "+999 1234567", "123456789012345678", "+1 415 555 26"):
        r = await client.post("/v1/members", json={"name": "Jane", "phone": phone})
        assert r.status_code == 422, phone
        body = assert_problem(r, 422, "validation_error")
        assert any("phone" in e["loc"] for e in body["errors"])
        r = await client.patch(f"/v1/members/{m['id']}", json={"phone": phone})
        assert r.status_code == 422, phone
        assert_problem(r, 422, "validation_error")
    assert await member_count(app) == 1
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m


# --- what each role sees ------------------------------------------------------------------------------------------

async def test_pos_sees_masked_phone_and_email_and_no_external_ref(client, make_client):
    """A till sees phone and email masked, and not the CRM's key for the person (it saw it in clear before)."""
    store = await create_store(client)
    pos = make_client(await create_key(client, "pos", store["id"]))
    app_client = make_client(await create_key(client, "app"))
    m = await enroll(client, phone="+14155552671", email="jane.doe@example.com", external_ref="crm-000123-jane")

    seen = (await pos.get(f"/v1/members/{m['id']}")).json()
    assert seen["phone"] != m["phone"] and seen["phone"].endswith("2671") and "*" in seen["phone"]
    assert "5552" not in seen["phone"]
    assert seen["email"] != m["email"] and seen["email"].endswith("@example.com") and "*" in seen["email"]
    assert "jane.doe" not in seen["email"]
    assert seen["external_ref"] is None
    looked_up = (await lookup(pos, card_number=m["card_number"])).json()["data"][0]
    assert looked_up == seen
    # The country code and at most half the number within it: a short number was shown whole (Niue's +683 4002
    # as +68*4002).
    for phone, masked in (("+6834002", "+683**02"), ("+4915112345678", "+49*******5678")):
        other = await enroll(client, phone=phone)
        assert (await pos.get(f"/v1/members/{other['id']}")).json()["phone"] == masked
    by_phone = (await lookup(pos, phone="+14155552671")).json()["data"]
    assert [x["id"] for x in by_phone] == [m["id"]] and by_phone[0] == seen
    summary = (await pos.get(f"/v1/members/{m['id']}/summary")).json()["member"]
    assert summary == seen
    edited = await pos.patch(f"/v1/members/{m['id']}", json={"locale": "zh-CN"})
    assert edited.status_code == 200 and edited.json()["external_ref"] is None

    for c in (client, app_client):
        plain = (await c.get(f"/v1/members/{m['id']}")).json()
        assert plain["phone"] == "+14155552671" and plain["email"] == "jane.doe@example.com"
        assert plain["external_ref"] == "crm-000123-jane"


async def test_pos_enrolls_and_sees_its_enrollment_masked(client, make_client):
    store = await create_store(client)
    pos = make_client(await create_key(client, "pos", store["id"]))
    r = await pos.post("/v1/members", json={"name": "Till", "phone": "+14155552671", "email": "till@example.com",
                                            "external_ref": "crm-till-1"})
    assert r.status_code == 201, r.text
    assert "*" in r.json()["phone"] and "*" in r.json()["email"] and r.json()["external_ref"] is None
    plain = (await client.get(f"/v1/members/{r.json()['id']}")).json()
    assert plain["phone"] == "+14155552671" and plain["external_ref"] == "crm-till-1"
    r = await pos.patch(f"/v1/members/{plain['id']}", json={"locale": "zh-CN"})
    assert r.status_code == 200 and "*" in r.json()["phone"]
    assert (await client.get(f"/v1/members/{plain['id']}")).json()["phone"] == "+14155552671"


# --- referrals ----------------------------------------------------------------------------------------------------

async def test_referral_code_links_the_new_member(client, app):
    referrer = await enroll(client)
    for typed in (referrer["referral_code"], referrer["referral_code"].lower()):
        new = await enroll(client, referral_code=typed)
        async with app.state.db.session(write=False) as session:
            row = await session.get(Member, new["id"])
            assert row.referred_by == referrer["id"]
        assert new["referral_code"] != referrer["referral_code"]
    plain = await enroll(client)
    async with app.state.db.session(write=False) as session:
        assert (await session.get(Member, plain["id"])).referred_by is None


async def test_unknown_referral_code_is_422(client, app):
    assert_problem(await client.post("/v1/members", json={"name": "J", "referral_code": "NOSUCHCODE"}), 422,
                   "invalid_referral_code")
    assert await member_count(app) == 0


async def test_referral_code_of_an_erased_member_is_422(client, app):
    referrer = await enroll(client)
    assert (await client.delete(f"/v1/members/{referrer['id']}")).status_code == 204
    r = await client.post("/v1/members", json={"name": "J", "referral_code": referrer["referral_code"]})
    assert_problem(r, 422, "invalid_referral_code")
    assert await member_count(app) == 1


# --- bounds -------------------------------------------------------------------------------------------------------

async def test_implausible_birthday_is_422(client, app):
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    for birthday in ("1899-12-31", "2999-01-01", tomorrow, "2020-02-30", "2020-13-45", "1990-1-1", "01/02/1990",
                     "not a date"):
        r = await client.post("/v1/members", json={"name": "J", "birthday": birthday})
        assert r.status_code == 422, birthday
        assert_problem(r, 422, "validation_error")
    assert await member_count(app) == 0


async def test_birthday_given_as_a_number_is_422(client, app):
    """Found by `make fuzz`: 1.2e-33 (and any Unix timestamp of a midnight) was taken as a date, 1970-01-01."""
    m = await enroll(client)
    for birthday in (1.2390647701125468e-33, 0, 631152000, 631152000.0):
        r = await client.post("/v1/members", json={"name": "J", "birthday": birthday})
        assert r.status_code == 422, (birthday, r.text)
        body = assert_problem(r, 422, "validation_error")
        assert any("birthday" in e["loc"] for e in body["errors"])
        r = await client.patch(f"/v1/members/{m['id']}", json={"birthday": birthday})
        assert r.status_code == 422, (birthday, r.text)
    assert await member_count(app) == 1
    assert (await client.get(f"/v1/members/{m['id']}")).json() == m


async def test_birthday_today_is_accepted(client):
    today = date.today().isoformat()
    r = await client.post("/v1/members", json={"name": "Newborn", "birthday": today})
    assert r.status_code == 201, r.text


TOO_LONG_OR_MALFORMED = [
    {"name": "x" * 101},
    {"name": "x" * 100_000},
    {"name": "J", "external_ref": "r" * 101},
    {"name": "J", "email": "a" * 250 + "@example.com"},
    {"name": "J", "email": "not-an-email"},
    {"name": "J", "locale": "english-please-thanks"},
    {"name": "J", "locale": "e"},
    {"name": "J", "referral_code": "AB"},
    {"name": "J", "phone": "+1" + "2" * 40},
]


async def test_too_long_or_malformed_fields_are_422(client, app):
    for body in TOO_LONG_OR_MALFORMED:
        r = await client.post("/v1/members", json=body)
        assert r.status_code == 422, str(body)[:80]
        assert_problem(r, 422, "validation_error")
    assert await member_count(app) == 0


async def test_longest_allowed_values_are_stored(client):
    r = await client.post("/v1/members", json={"name": "n" * 100, "external_ref": "r" * 100,
                                               "email": "a" * 64 + "@" + "b" * 60 + ".example.com"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "n" * 100


async def test_birthday_in_the_future_is_judged_by_the_service_clock(client, clock):
    from datetime import UTC, datetime

    clock.freeze(datetime(2020, 6, 1, 12, tzinfo=UTC))
    r = await client.post("/v1/members", json={"name": "Early", "birthday": "2020-06-02"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert r.json()["errors"][0]["loc"] == ["body", "birthday"]
    r = await client.post("/v1/members", json={"name": "Born today", "birthday": "2020-06-01"})
    assert r.status_code == 201, r.text
    r = await client.patch(f"/v1/members/{r.json()['id']}", json={"birthday": "2021-01-01"})
    assert r.status_code == 422
