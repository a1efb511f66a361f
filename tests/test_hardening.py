"""Hostile and unusual input at the edge of the API: bodies nested past what the JSON writer takes, bodies larger
than the service reads, codes typed in full-width characters, loosely typed numbers in the program. Each case
answered wrongly before (a 500, a body read whole, a code not found, ``true`` taken as 1)."""

from __future__ import annotations

import unicodedata

import pytest

from tests import factories as f


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [254, 600, 1022])
async def test_a_body_nested_past_what_json_can_write_again_is_not_a_500(client, make_client, depth):
    """orjson reads 1,023 levels but writes 254: the idempotency hash, taken before the schema, raised. (Past
    about a thousand levels the body is refused as unreadable, 400.)"""
    member = await f.enroll(client)
    body = b'{"amount": 1, "reason": "x", "junk": ' + _nested(depth) + b"}"
    r = await client.post(f"/v1/members/{member['id']}/points/adjustments", content=body,
                          headers={"Idempotency-Key": f.new_key(), "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["code"] in ("bad_request", "validation_error"), r.text
    store = await f.create_store(client)
    pos = make_client(await f.create_key(client, "pos", store["id"]))
    raw = (b'{"receipt_id": "r1", "member": {"member_id": "' + member["id"].encode() + b'"}, "store_id": "'
           + store["id"].encode() + b'", "currency": "USD", "lines": ' + _nested(depth) + b"}")
    r = await pos.post("/v1/checkout/transactions", content=raw,
                       headers={"Idempotency-Key": f.new_key(), "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["code"] in ("bad_request", "validation_error"), r.text


async def test_a_body_past_the_limit_is_refused_before_it_is_read(client, make_client, app):
    """A 6 MB basket was read, parsed and held before the schema's 500 lines refused it."""
    store = await f.create_store(client)
    member = await f.enroll(client)
    pos = make_client(await f.create_key(client, "pos", store["id"]))
    limit = app.state.settings.max_body_bytes
    raw = (b'{"member": {"member_id": "' + member["id"].encode() + b'"}, "store_id": "' + store["id"].encode()
           + b'", "currency": "USD", "lines": [' + b",".join([b'{"a":[1,2,3,4]}'] * (limit // 10)) + b"]}")
    problem = f.assert_problem(await pos.post("/v1/checkout/quote", content=raw,
                                              headers={"Content-Type": "application/json"}), 413, "payload_too_large")
    assert f"at most {limit:,}" in problem["detail"]

    async def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, len(raw), 65_536):
            yield raw[start:start + 65_536]

    r = await pos.post("/v1/checkout/quote", content=chunks(), headers={"Content-Type": "application/json"})
    f.assert_problem(r, 413, "payload_too_large")
    r = await pos.post("/v1/checkout/quote", json=f.basket(member["id"], store["id"]))
    assert r.status_code == 200, r.text  # a body within the limit, as ever


async def test_a_voucher_code_typed_in_full_width_characters_is_found(client, make_client):
    """A CJK input method in full-width mode types ＡＢＣ２３: the code was unknown, and counted as a failed
    look-up against the key's limit."""
    store = await f.create_store(client)
    member = await f.enroll(client)
    campaign = (await client.post("/v1/voucher-campaigns", json={"name": "Five off", "kind": "amount_off",
                                                                  "value": 500})).json()
    r = await client.post(f"/v1/voucher-campaigns/{campaign['id']}/vouchers", json={"member_id": member["id"]},
                          headers={"Idempotency-Key": f.new_key()})
    code = r.json()[0]["code"]
    full_width = "".join(chr(ord(ch) + 0xFEE0) for ch in code)
    assert unicodedata.normalize("NFKC", full_width) == code != full_width
    pos = make_client(await f.create_key(client, "pos", store["id"]))
    r = await pos.get(f"/v1/vouchers/{full_width}")
    assert r.status_code == 200 and r.json()["code"] == code, r.text
    r = await f.commit(pos, f.basket(member["id"], store["id"], redeem={"vouchers": [full_width]}))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("field", "value"), [
    (("referral", "referrer_points"), True),
    (("birthday_bonus", "points"), "250"),
    (("point_value",), 2.0),
    (("max_burn_percent",), True),
])
async def test_the_programs_whole_numbers_are_strict(client, field, value):
    """Every amount in the API refuses a boolean, a string or a float; the program's took ``true`` as 1 point."""
    program = (await client.get("/v1/program")).json()
    target = program
    for part in field[:-1]:
        target = target[part]
    target[field[-1]] = value
    f.assert_problem(await client.put("/v1/program", json=program), 422, "validation_error")
