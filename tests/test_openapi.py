"""The OpenAPI document as generated clients and the /docs page read it: examples that work, the headers and
fields every answer has, declared as such (API.md is the contract the document must match)."""

from __future__ import annotations

import jsonschema_rs
import pytest

from tests import factories as f

# The operations a till, the app backend or an integration starts with: each shows a worked request in /docs.
MAIN_WRITES = ("enroll_member", "update_member", "create_quote", "commit_transaction", "return_checkout_lines",
               "top_up_member_wallet", "adjust_member_points", "issue_gift_cards", "issue_vouchers",
               "create_voucher_campaign", "create_punch_card_program", "create_store", "create_api_key",
               "update_program", "create_webhook")


async def document(client) -> dict:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(doc: dict):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def request_schema(doc: dict, op: dict) -> tuple[str, dict]:
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    return name, doc["components"]["schemas"][name]


async def test_every_example_is_valid_against_its_schema(client):
    """An example /docs shows is one the service accepts (a request) or gives (an answer). The campaign's and the
    punch card programme's answers showed the request's example (no `id`), the program's none at all, and the
    segment report's lost its `"from": null` (FastAPI writes the document without nulls)."""
    doc = await document(client)
    schemas = doc["components"]["schemas"]
    seen = 0
    for name, schema in schemas.items():
        if "examples" not in schema:
            continue
        assert schema["examples"], f"{name} has an empty list of examples"
        validator = jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                                        "components": doc["components"]})
        for example in schema["examples"]:
            problems = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(example)]
            assert not problems, f"{name}'s example: {problems}"
            seen += 1
    assert seen >= 20


async def test_the_main_operations_show_a_request_example(client):
    doc = await document(client)
    by_id = {op["operationId"]: op for _, _, op in operations(doc)}
    for operation_id in MAIN_WRITES:
        name, schema = request_schema(doc, by_id[operation_id])
        assert schema.get("examples"), f"{operation_id}: {name} has no example"


async def test_the_documented_checkout_example_names_a_card_number_that_can_exist(client):
    """The quote's and the commit's example named card 8000000000000001, whose check digit is wrong: sent from
    /docs, it answered 422 `invalid_card_number` before looking for anyone. It now reaches the look-up."""
    doc = await document(client)
    by_id = {op["operationId"]: op for _, _, op in operations(doc)}
    await f.create_store(client, "berlin-01")
    for operation_id, path in (("create_quote", "/v1/checkout/quote"),
                               ("commit_transaction", "/v1/checkout/transactions")):
        _, schema = request_schema(doc, by_id[operation_id])
        r = await client.post(path, json=schema["examples"][0], headers={"Idempotency-Key": f.new_key()})
        f.assert_problem(r, 404, "member_not_found")


async def test_every_tag_is_described(client):
    """A generated client makes a module per tag and /docs a section: gift-cards, vouchers and personalization had
    no description."""
    doc = await document(client)
    described = {tag["name"] for tag in doc["tags"] if tag.get("description")}
    used = {tag for _, _, op in operations(doc) for tag in op.get("tags", [])}
    assert used <= described, used - described


async def test_a_required_idempotency_key_is_declared_required(client):
    """API.md: a POST that moves a balance requires `Idempotency-Key` (missing: 400 `idempotency_key_required`).
    The document declared the header optional, so generated clients made it an optional argument."""
    doc = await document(client)
    idempotent = [(path, op) for path, _, op in operations(doc) if op.get("x-idempotency")]
    assert len(idempotent) >= 9
    for path, op in idempotent:
        [header] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and header.get("required", False) is (op["x-idempotency"] == "required"), path
    # Declared required, its absence is still API.md's 400, not a 422 of the schema.
    member = (await f.enroll(client))["id"]
    r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 500, "payment_ref": "p"})
    f.assert_problem(r, 400, "idempotency_key_required")


async def test_the_replay_header_is_declared_and_sent(client):
    doc = await document(client)
    for path, method, op in operations(doc):
        if op.get("x-idempotency"):
            for status, response in op["responses"].items():
                if status.startswith("2"):
                    assert "Idempotent-Replayed" in response.get("headers", {}), (method, path, status)
    member = (await f.enroll(client))["id"]
    key = f.new_key()
    for replayed in (False, True):
        r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 500, "payment_ref": "p"},
                              headers={"Idempotency-Key": key})
        assert r.status_code == 201 and r.headers.get("idempotent-replayed") == ("true" if replayed else None)


# Answers API.md names, whose every field the service always writes (null where it does not apply).
ALWAYS_WHOLE = ("MemberPublic", "TransactionPublic", "ReturnPublic", "Reversed", "Quote", "VoucherPublic",
                "VoucherDetail", "SegmentPublic", "LedgerEntryPublic", "CampaignPublic", "PunchProgramPublic",
                "ProgramPublic", "TierPublic", "WalletPublic", "TopUpPublic", "PointsPublic", "PunchCardPublic",
                "GiftCardIssued", "GiftCardPublic", "EventPublic", "ApiKeyCreated", "StorePublic", "LiabilityPublic",
                "AppliedPunchReward", "AppliedTierDiscount", "AppliedVoucher", "AppliedPoints", "AppliedWallet",
                "AppliedGiftCard")


@pytest.mark.parametrize("name", ALWAYS_WHOLE)
async def test_answers_declare_every_field_required(client, name):
    """`tier_change` (`{from, to}|null` in API.md), a voucher's `valid_from`, a segment's `last_purchase_on`, a
    ledger entry's `reason`, … are in every answer, null or not, but were declared optional: generated clients
    typed them "maybe missing" (`Unset`) as well as null."""
    schema = (await document(client))["components"]["schemas"][name]
    assert set(schema["properties"]) == set(schema.get("required", [])), name


async def test_a_member_status_is_one_of_api_md_s(client):
    schema = (await document(client))["components"]["schemas"]["MemberPublic"]["properties"]["status"]
    assert schema["enum"] == ["active", "erased"]


async def test_a_body_too_large_is_declared_where_a_body_is_taken(client):
    """Every body passes the size limit first (413 `payload_too_large`, README "Configuration"): undeclared, a
    generated client met it as an unexpected status."""
    doc = await document(client)
    for path, method, op in operations(doc):
        if "requestBody" in op:
            assert op["responses"]["413"]["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path)
    r = await client.post("/v1/members", content=b'{"name": "' + b"x" * (1 << 20) + b'"}',
                          headers={"Content-Type": "application/json"})
    f.assert_problem(r, 413, "payload_too_large")


async def test_a_receipt_types_what_the_sale_issued(client):
    """`earned.vouchers_issued` and `earned.rewards_issued` were arrays of anonymous objects (a generated client got
    untyped `EarnedVouchersIssuedItem` dictionaries): they are the vouchers and rewards the rest of the API names."""
    earned = (await document(client))["components"]["schemas"]["Earned"]["properties"]
    assert earned["vouchers_issued"]["items"] == {"$ref": "#/components/schemas/VoucherPublic"}
    assert earned["rewards_issued"]["items"] == {"$ref": "#/components/schemas/RewardIssued"}


async def test_a_problem_types_its_errors(client):
    problem = (await document(client))["components"]["schemas"]["Problem"]["properties"]
    assert problem["errors"]["anyOf"][0]["items"] == {"$ref": "#/components/schemas/ProblemItem"}
