"""Operations: health, readiness, metrics, request ids, logging of unexpected errors, the OpenAPI document,
the migrations matching the models, and start-up of several processes at once."""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import logging
import time

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import APIRouter
from sqlalchemy import func, select
from sqlmodel import SQLModel

from service.app import create_app, prepare_database
from service.auth.models import ApiKey
from service.cli import OPENAPI_PATH, main, render_openapi
from service.clock import Clock
from service.db import Database
from service.observability import JsonFormatter
from service.routing import UnitOfWorkRoute
from tests.conftest import ADMIN_KEY, ROOT_DIR
from tests.factories import new_key
from tests.server import running_server, served_command


async def test_healthz_needs_no_key(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as anonymous:
        r = await anonymous.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert (await anonymous.get("/readyz")).status_code == 200
        assert (await anonymous.get("/docs")).status_code == 200
        assert (await anonymous.get("/openapi.json")).status_code == 200
        assert (await anonymous.get("/v1/program")).status_code == 401


async def test_readyz_reports_a_schema_behind_the_code(app, client):
    app.state.schema_head = "9999"
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "not_ready" and "loyalty migrate" in r.json()["detail"]


async def test_metrics_count_requests_by_route_template_and_status(client):
    await client.get("/v1/members/mem_missing")
    await client.get("/v1/members/mem_other")
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    line = next(ln for ln in r.text.splitlines() if ln.startswith("loyalty_http_requests_total{")
                and 'route="/v1/members/{member_id}"' in ln and 'status="404"' in ln)
    assert line.endswith(" 2.0")
    assert "loyalty_http_request_duration_seconds_bucket" in r.text


async def test_request_id_is_echoed_or_made(client):
    r = await client.get("/healthz", headers={"X-Request-ID": "till-7:abc.123"})
    assert r.headers["x-request-id"] == "till-7:abc.123"
    made = (await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})).headers["x-request-id"]
    assert made != "bad id with spaces" and len(made) == 32
    assert (await client.get("/healthz")).headers["x-request-id"] != made


async def test_the_access_log_names_the_route_never_a_code_in_the_path(client, caplog):
    """A bearer voucher code or a gift card code sits in the path of GET /v1/vouchers/{code} and GET
    /v1/gift-cards/{code}; the access log wrote the raw path, so whoever read the logs read redeemable codes. A
    line holds the route's template, and a path no route matched only its first two segments."""
    r = await client.post("/v1/voucher-campaigns", json={"name": "5 off", "kind": "amount_off", "value": 500,
                                                         "min_spend": 0, "stackable": True})
    assert r.status_code == 201, r.text
    issued = await client.post(f"/v1/voucher-campaigns/{r.json()['id']}/vouchers", json={"count": 1},
                               headers={"Idempotency-Key": new_key()})
    assert issued.status_code == 201, issued.text
    voucher = issued.json()[0]["code"]
    cards = await client.post("/v1/gift-cards", json={"amount": 1000}, headers={"Idempotency-Key": new_key()})
    assert cards.status_code == 201, cards.text
    card = cards.json()[0]
    caplog.set_level(logging.INFO, logger="service.access")
    caplog.clear()
    assert (await client.get(f"/v1/vouchers/{voucher}")).status_code == 200
    assert (await client.get(f"/v1/gift-cards/{card['code']}", headers={"X-Gift-Card-Pin": card["pin"]})
            ).status_code == 200
    assert (await client.get("/v1/vouchers/NOSUCHCODE0000")).status_code == 404  # a route's 404: its template
    assert (await client.get(f"/v1/vouchers/{voucher}/typo")).status_code == 404  # no route
    lines = [rec for rec in caplog.records if rec.name == "service.access"]
    assert [(rec.path, rec.route, rec.status) for rec in lines] == [
        ("/v1/vouchers/{code}", "/v1/vouchers/{code}", 200), ("/v1/gift-cards/{code}", "/v1/gift-cards/{code}", 200),
        ("/v1/vouchers/{code}", "/v1/vouchers/{code}", 404), ("/v1/vouchers/…", "unmatched", 404)]
    written = "".join(JsonFormatter().format(rec) for rec in lines)
    for secret in (voucher, card["code"], card["pin"], "NOSUCHCODE0000"):
        assert secret not in written, (secret, written)


async def test_unexpected_error_is_a_logged_problem_500_with_the_request_id(app, caplog):
    router = APIRouter(route_class=UnitOfWorkRoute)

    @router.get("/boom/{code}")
    async def boom(code: str) -> None:
        raise RuntimeError("kaboom")

    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        with caplog.at_level(logging.ERROR, logger="service.errors"):
            r = await c.get("/boom/SECRETCODE42", headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "internal_error" and body["request_id"] == "req-42" and "kaboom" not in r.text
    [logged] = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "req-42"]
    assert logged.exc_info and isinstance(logged.exc_info[1], RuntimeError), logged.exc_info  # not (None, None, None)
    assert "kaboom" in JsonFormatter().format(logged)  # the line's "exc": the traceback of what failed
    assert logged.path == "/boom/{code}" and "SECRETCODE42" not in JsonFormatter().format(logged)


def test_openapi_document_is_current():
    """`loyalty openapi --check` passes: openapi/openapi.json is the app's document."""
    assert (ROOT_DIR / OPENAPI_PATH).read_text() == render_openapi(), "run `loyalty openapi`"


def test_openapi_check_command_fails_on_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "openapi.json"
    stale.write_text(json.dumps({"openapi": "3.1.0"}))
    assert main(["openapi", "--check", "--output", str(stale)]) == 1
    assert main(["openapi", "--output", str(stale)]) == 0
    assert main(["openapi", "--check", "--output", str(stale)]) == 0


def test_openapi_operations_have_ids_and_problem_responses():
    doc = json.loads(render_openapi())
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert op.get("operationId"), f"{method} {path} has no operationId"
            if path.startswith("/v1/"):
                assert "401" in op["responses"], f"{method} {path} does not declare its 401"


async def test_migrations_build_exactly_the_models(app):
    """The schema the migrations build is the schema the models describe (no drift either way)."""

    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return compare_metadata(context, SQLModel.metadata)

    async with app.state.db.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_several_processes_starting_at_once_ensure_one_bootstrap_key(app, settings):
    databases = [Database(settings.database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(prepare_database(db, settings, Clock()) for db in databases))
    finally:
        for db in databases:
            await db.dispose()
    async with app.state.db.session(write=False) as session:
        count = (await session.execute(select(func.count()).select_from(ApiKey))).scalar_one()
    assert count == 1


def test_a_real_server_with_two_workers_serves_the_api(database_url, app):
    with served_command(database_url, workers=2) as base:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as c:
            assert c.get("/healthz").status_code == 200
            created = c.post("/v1/members", json={"name": "Served", "email": "served@example.com"})
            assert created.status_code == 201, created.text
            card = created.json()["card_number"]
            found = c.get("/v1/members", params={"card_number": card}).json()["data"]
            assert [m["id"] for m in found] == [created.json()["id"]]
            assert c.get("/metrics").status_code == 200


def test_a_served_connection_outlasts_a_client_pools_idle_timeout(database_url, app):
    """A client may reuse an idle connection for as long as its pool keeps it (httpx: 5 s); a server that closed
    it at 5 s (uvicorn's default) would leave the request sent on it unanswered. ``loyalty serve`` keeps idle
    connections ``LOYALTY_KEEP_ALIVE_SECONDS`` (75 s)."""
    with running_server(database_url, workers=1) as base:
        url = httpx.URL(base)
        connection = http.client.HTTPConnection(url.host, url.port, timeout=10)
        try:
            for pause in (0, 6):
                time.sleep(pause)
                connection.request("GET", "/healthz")
                answer = connection.getresponse()  # RemoteDisconnected if the server closed the idle connection
                assert answer.status == 200 and answer.read()
        finally:
            connection.close()


async def test_a_served_app_freezes_what_lives_as_long_as_the_process(app, settings):
    """``loyalty serve``'s app moves the objects alive after start-up out of the collector's view; the app the
    tests build does not (each test's app would otherwise stay frozen for the rest of the run)."""
    assert gc.get_freeze_count() == 0
    served = create_app(settings, log=False, freeze_gc=True)
    try:
        async with served.router.lifespan_context(served):
            assert gc.get_freeze_count() > 10_000
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://t") as c:
                assert (await c.get("/healthz")).status_code == 200
    finally:
        gc.unfreeze()


async def test_405_lists_every_method_of_the_path(client):
    r = await client.request("OPTIONS", "/v1/members/mem_x")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert (await client.put("/v1/members", json={})).headers["allow"] == "GET, POST"


def test_openapi_declares_errors_as_problem_json():
    doc = json.loads(render_openapi())
    for path, operations in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in operations.items():
            for status in ("400", "401", "403", "422", "500"):
                assert status in op["responses"], f"{method} {path} lacks {status}"
            for status, response in op["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], f"{method} {path} {status}"
