"""Schemathesis against the app's own OpenAPI document, in process (no network), every operation, admin key.

For each operation, in each generation mode (positive: data the schema allows; negative: data it forbids),
Hypothesis draws requests and the app must answer without a server error and as documented: a declared status
code, a declared content type, a body that validates against the declared schema, and (negative mode) a 4xx
for input the schema forbids.

To reach past "member not found", a drawn valid request's path identifiers and basket fields are, some of the
time, replaced with real ones from a seeded store (a member with points and wallet money, a committed sale, a punch
card programme). The app and its data live for the whole module: what one example does (an erasure, a new
program) is state the next examples meet, as in production.

Examples per operation: ``LOYALTY_FUZZ_EXAMPLES`` valid requests (default 50) and
``LOYALTY_FUZZ_NEGATIVE_EXAMPLES`` invalid ones (default 25: generating schema-violating bodies costs schemathesis
~0.2 s each, most of this module's time). In the suite the draws are derandomized, so every run (and CI) tries
the same requests; ``make fuzz`` runs 1,000 of each per operation with a fresh random seed, printed at the start
(``LOYALTY_FUZZ_SEED=<seed> make fuzz`` draws the same requests again).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.factories import enroll, line
from tests.live import LiveApp, live_app

EXAMPLES = int(os.environ.get("LOYALTY_FUZZ_EXAMPLES", "50"))
NEGATIVE_EXAMPLES = int(os.environ.get("LOYALTY_FUZZ_NEGATIVE_EXAMPLES", "25"))
RANDOM_SEED = os.environ.get("LOYALTY_FUZZ_RANDOM") == "1"  # `make fuzz`: explore new requests each run
# The random run's seed, drawn here (or given, to replay a run) and printed: Hypothesis names the seed it drew
# only when a failure does not reproduce, so a run that found something could not otherwise be repeated.
SEED = int(os.environ.get("LOYALTY_FUZZ_SEED") or secrets.randbits(32)) if RANDOM_SEED else None

# Built without its lifespan: only to read the OpenAPI document from the app object.
SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="sqlite+aiosqlite://", bootstrap_admin_key=None), log=False).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]


def _seed(live: LiveApp) -> dict[str, list[str]]:
    """A store, a punch card programme and three members with points, wallet money and a sale; their ids."""

    def post(path: str, body: dict | None = None, **headers: str) -> dict:
        r = live.request("POST", path, json=body, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()

    post("/v1/stores", {"id": "fuzz-store", "name": "Fuzz", "timezone": "Europe/Berlin"})
    punch = post("/v1/punch-card-programs", {
        "name": "Coffee", "qualifying": {"skus": [], "categories": ["coffee"]}, "stamps_required": 3,
        "reward": {"skus": [], "categories": ["coffee"], "max_value": 500}, "reward_valid_days": 30, "active": True})
    members, transactions = [], []
    for i in range(3):
        member = post("/v1/members", {"name": f"Fuzz {i}", "phone": f"+1415555{i:04d}"})
        members.append(member["id"])
        post(f"/v1/members/{member['id']}/points/adjustments", {"amount": 5000, "reason": "seed"},
             **{"Idempotency-Key": f"seed-adjust-{i}"})
        post(f"/v1/members/{member['id']}/wallet/top-ups", {"amount": 5000, "payment_ref": "seed"},
             **{"Idempotency-Key": f"seed-top-up-{i}"})
        sale = post("/v1/checkout/transactions", {
            "receipt_id": f"seed-{i}", "member": {"member_id": member["id"]}, "store_id": "fuzz-store",
            "currency": "USD", "lines": [line("1", "COFFEE", "coffee", 4, 450), line("2")]},
            **{"Idempotency-Key": f"seed-sale-{i}"})
        transactions.append(sale["id"])
    key = post("/v1/api-keys", {"role": "app", "name": "fuzz throwaway"})
    return {"member_id": members, "transaction_id": transactions, "program_id": [punch["id"]], "key_id": [key["id"]]}


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, database_url: str, table_names: list[str]) -> Iterator[LiveApp]:
    if SEED is not None:  # past pytest's output capture, so that `make fuzz` shows it as it starts
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\nfuzz seed {SEED} (LOYALTY_FUZZ_SEED={SEED} make fuzz draws the same requests)", flush=True)
    with live_app(database_url, table_names) as app:
        app.known = _seed(app)
        yield app


def send(live: LiveApp, case) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url="http://test")
    try:
        request = live.client.build_request(
            kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers"),
            json=kwargs.get("json"), content=kwargs.get("data"))
    except (UnicodeEncodeError, httpx.InvalidURL, ValueError):
        assume(False)  # a request no HTTP client can send (e.g. a header with a non-Latin-1 character)
    return live.run(live.client.send(request))


def steer(case, known: dict[str, list[str]], draw: Callable[[Any], Any]) -> None:
    """Some of the time, point the drawn request at real data so that it gets past the first look-up."""
    for name in case.path_parameters or {}:
        if name in known and draw(st.booleans()):
            case.path_parameters[name] = draw(st.sampled_from(known[name]))
    body = case.body
    if isinstance(body, dict) and draw(st.booleans()):
        if "member" in body:
            body["member"] = {"member_id": draw(st.sampled_from(known["member_id"]))}
        if "store_id" in body:
            body["store_id"] = "fuzz-store"
        if "currency" in body:
            body["currency"] = "USD"


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=not RANDOM_SEED, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def _negatable(operation) -> bool:
    """Whether the operation takes anything (besides the API key, always the admin's here) that can be invalid."""
    return bool(list(operation.body)) or any(p.name != "Authorization" for p in operation.iter_parameters())


CASES = [pytest.param(op, GenerationMode.POSITIVE, id=f"{op.label} positive") for op in OPERATIONS] + [
    pytest.param(op, GenerationMode.NEGATIVE, id=f"{op.label} negative") for op in OPERATIONS if _negatable(op)]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_operation_answers_as_documented(live: LiveApp, operation, mode: GenerationMode) -> None:
    checks = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else CHECKS
    strategy = operation.as_strategy(generation_mode=mode, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    @seed(SEED)
    @_settings(NEGATIVE_EXAMPLES if mode is GenerationMode.NEGATIVE else EXAMPLES)
    @given(case=strategy, data=st.data())
    def run(case, data) -> None:
        if mode is GenerationMode.POSITIVE:  # steering an invalid request could undo what makes it invalid
            steer(case, live.known, data.draw)
        response = send(live, case)
        case.validate_response(response, checks=checks)

    run()


async def test_idempotent_operations_document_the_409_they_answer(client) -> None:
    """Found by the fuzzing above: a reused Idempotency-Key answers 409 on operations that did not declare it."""
    member = (await enroll(client))["id"]
    first = await client.post(f"/v1/members/{member}/wallet/cash-out", headers={"Idempotency-Key": "same"})
    assert first.status_code == 200, first.text
    reused = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 100, "payment_ref": "x"},
                               headers={"Idempotency-Key": "same"})
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused", reused.text
    document = (await client.get("/openapi.json")).json()
    idempotent = [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()
                  if any(p["name"] == "Idempotency-Key" for p in op.get("parameters", []))]
    assert len(idempotent) >= 7
    undeclared = [f"{method.upper()} {path}" for path, method, op in idempotent if "409" not in op["responses"]]
    assert not undeclared, undeclared
