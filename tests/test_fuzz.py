"""Schemathesis against the app's own OpenAPI document, in process (no network), every operation, admin key.

For each operation, in each generation mode (positive: data the schema allows; negative: data it forbids),
Hypothesis draws requests and the app must answer without a server error and as documented: a declared status
code, a declared content type, a body that validates against the declared schema, and (negative mode) a 4xx
for input the schema forbids.

To reach past "member not found", a drawn request's path identifiers and basket fields are, some of the time,
replaced with real ones from a seeded store (a member with points and wallet money, a committed sale, a punch
card programme). The app and its data live for the whole module: what one example does (an erasure, a new
program) is state the next examples meet, as in production.

Examples per operation and mode: ``LOYALTY_FUZZ_EXAMPLES`` (default 50, derandomized so that the suite is
reproducible); ``make fuzz`` runs 1,000 each with a fresh random seed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
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
from service.auth import service as auth_service
from service.program import service as program_service
from service.settings import Settings
from tests.conftest import ADMIN_KEY, TravelClock, wipe
from tests.factories import line

EXAMPLES = int(os.environ.get("LOYALTY_FUZZ_EXAMPLES", "50"))
RANDOM_SEED = "LOYALTY_FUZZ_EXAMPLES" in os.environ  # `make fuzz`: explore; the suite: the same examples every run

# Built without its lifespan: only to read the OpenAPI document from the app object.
SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="sqlite+aiosqlite://", bootstrap_admin_key=None), log=False).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]


class LiveApp:
    """The app with its lifespan entered, on an event loop of its own (the tests here are synchronous, as
    Hypothesis' ``@given`` wants), plus the identifiers of the data seeded into it."""

    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        settings = Settings(database_url=database_url, bootstrap_admin_key=ADMIN_KEY, currency="USD",
                            log_level="WARNING", db_pool_size=5)
        self.app = create_app(settings, clock=TravelClock(), log=False)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test",
                                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        self.known: dict[str, list[str]] = {}
        self._lifespan = self.app.router.lifespan_context(self.app)

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def start(self) -> None:
        self.run(self._lifespan.__aenter__())
        self.run(self._seed())

    def stop(self) -> None:
        self.run(self.client.aclose())
        self.run(self._lifespan.__aexit__(None, None, None))
        self.loop.close()

    def send(self, case) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url="http://test")
        try:
            request = self.client.build_request(
                kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers"),
                json=kwargs["json"] if "json" in kwargs else None, content=kwargs.get("data"))
        except (UnicodeEncodeError, httpx.InvalidURL, ValueError):
            assume(False)  # a request no HTTP client can send (e.g. a header with a non-Latin-1 character)
        return self.run(self.client.send(request))

    async def _seed(self) -> None:
        c = self.client

        async def post(path: str, body: dict | None = None, **headers: str) -> dict:
            r = await c.post(path, json=body, headers=headers)
            assert r.status_code in (200, 201), r.text
            return r.json()

        await post("/v1/stores", {"id": "fuzz-store", "name": "Fuzz", "timezone": "Europe/Berlin"})
        punch = await post("/v1/punch-card-programs", {
            "name": "Coffee", "qualifying": {"skus": [], "categories": ["coffee"]},
            "stamps_required": 3, "reward": {"skus": [], "categories": ["coffee"], "max_value": 500},
            "reward_valid_days": 30, "active": True})
        members, transactions = [], []
        for i in range(3):
            member = await post("/v1/members", {"name": f"Fuzz {i}", "phone": f"+1415555{i:04d}"})
            members.append(member["id"])
            await post(f"/v1/members/{member['id']}/points/adjustments", {"amount": 5000, "reason": "seed"},
                       **{"Idempotency-Key": f"seed-adjust-{i}"})
            await post(f"/v1/members/{member['id']}/wallet/top-ups", {"amount": 5000, "payment_ref": "seed"},
                       **{"Idempotency-Key": f"seed-top-up-{i}"})
            sale = await post("/v1/checkout/transactions", {
                "receipt_id": f"seed-{i}", "member": {"member_id": member["id"]}, "store_id": "fuzz-store",
                "currency": "USD", "lines": [line("1", "COFFEE", "coffee", 4, 450), line("2")]},
                **{"Idempotency-Key": f"seed-sale-{i}"})
            transactions.append(sale["id"])
        key = await post("/v1/api-keys", {"role": "app", "name": "fuzz throwaway"})
        self.known = {"member_id": members, "transaction_id": transactions, "program_id": [punch["id"]],
                      "key_id": [key["id"]]}


@pytest.fixture(scope="module")
def live_app(database_url: str, table_names: list[str]) -> Iterator[LiveApp]:
    asyncio.run(wipe(database_url, table_names))
    auth_service.forget_cached_keys()
    program_service._parsed.clear()
    live = LiveApp(database_url)
    live.start()
    yield live
    live.stop()


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


def _settings() -> settings:
    return settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM_SEED, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def _negatable(operation) -> bool:
    """Whether the operation takes anything (besides the API key, always the admin's here) that can be invalid."""
    return bool(list(operation.body)) or any(p.name != "Authorization" for p in operation.iter_parameters())


CASES = [pytest.param(op, GenerationMode.POSITIVE, id=f"{op.label} positive") for op in OPERATIONS] + [
    pytest.param(op, GenerationMode.NEGATIVE, id=f"{op.label} negative") for op in OPERATIONS if _negatable(op)]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_operation_answers_as_documented(live_app: LiveApp, operation, mode: GenerationMode) -> None:
    checks = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else CHECKS
    strategy = operation.as_strategy(generation_mode=mode, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    @_settings()
    @given(case=strategy, data=st.data())
    def run(case, data) -> None:
        steer(case, live_app.known, data.draw)
        response = live_app.send(case)
        case.validate_response(response, checks=checks)

    run()
