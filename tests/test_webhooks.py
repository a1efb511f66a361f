"""Webhooks: endpoints (admin), signed deliveries to a local receiver, retries with backoff, disabling after a
day of failures, redelivery, the in-process worker and ``loyalty deliver``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from service.app import create_app
from service.events import delivery
from service.events import service as events_service
from service.events.models import Webhook
from tests import factories as f
from tests.receiver import Receiver, dribbling, receiving
from tests.server import run_cli

SECRET = "whsec_test_0123456789abcdef"


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as the README shows it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    signed = f"{parts['t']}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) <= tolerance


async def subscribe(client, receiver: Receiver, **body) -> dict:
    r = await client.post("/v1/webhooks", json={"url": receiver.url, "secret": SECRET, **body})
    assert r.status_code == 201, r.text
    return r.json()


async def deliver_all(app, clock) -> int:
    total = 0
    async with delivery.http_client() as http:
        while attempted := await delivery.deliver_once(app.state.db, clock, http):
            total += attempted
    return total


async def log_of(client, webhook_id: str) -> list[dict]:
    r = await client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_a_receiver_gets_each_event_once_with_a_valid_signature(client, app, clock):
    store = (await f.create_store(client))["id"]
    before = (await f.enroll(client))["id"]  # before the subscription: not delivered
    with receiving() as receiver:
        hook = await subscribe(client, receiver)
        assert hook["secret"] == SECRET and hook["status"] == "active" and hook["id"].startswith("whk_")
        listed = (await client.get("/v1/webhooks")).json()["data"]
        assert [w["id"] for w in listed] == [hook["id"]] and "secret" not in listed[0]
        assert "secret" not in (await client.get(f"/v1/webhooks/{hook['id']}")).json()
        sales = await subscribe(client, receiver, types=["transaction.committed"])

        member = (await f.enroll(client))["id"]
        r = await f.commit(client, f.basket(member, store))
        assert r.status_code == 201, r.text
        assert await deliver_all(app, clock) == 3
        assert await deliver_all(app, clock) == 0  # nothing is sent twice

        feed = (await client.get("/v1/events")).json()["data"]
        new = [e for e in feed if e["data"].get("member_id") != before]
        assert sorted(receiver.event_ids()) == sorted([e["id"] for e in new] + [new[-1]["id"]])
        for got in receiver.requests:
            assert verify_signature(SECRET, got.headers["x-loyalty-signature"], got.body)
            assert not verify_signature("another secret 0123", got.headers["x-loyalty-signature"], got.body)
            assert got.headers["content-type"] == "application/json"
            assert got.event in feed and got.headers["x-loyalty-event-id"] == got.event["id"]
        assert [d["event_type"] for d in await log_of(client, sales["id"])] == ["transaction.committed"]
        log = await log_of(client, hook["id"])
        assert {(d["status"], d["attempts"], d["last_status_code"]) for d in log} == {("delivered", 1, 200)}

        assert (await client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
        f.assert_problem(await client.get(f"/v1/webhooks/{hook['id']}"), 404, "webhook_not_found")
        await f.enroll(client)
        sent = len(receiver.requests)
        assert await deliver_all(app, clock) == 0 and len(receiver.requests) == sent


async def test_a_failing_receiver_is_retried_with_backoff_then_disabled(client, app, clock):
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    clock.freeze(start)
    with receiving() as receiver:
        receiver.status = 503
        hook = await subscribe(client, receiver)
        await f.enroll(client)
        assert await deliver_all(app, clock) == 1
        times = [clock.now()]
        while True:
            [entry] = await log_of(client, hook["id"])
            state = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
            if state["status"] == "disabled":
                break
            assert entry["status"] == "pending" and entry["last_status_code"] == 503
            due = datetime.fromisoformat(entry["next_attempt_at"])
            clock.freeze(due - timedelta(seconds=1))
            assert await deliver_all(app, clock) == 0  # not before it is due
            clock.freeze(due)
            assert await deliver_all(app, clock) == 1
            times.append(clock.now())
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        # 30 s doubling, each with jitter between half and all of it, capped at 6 h.
        for n, gap in enumerate(gaps, start=1):
            full = min(30 * 2 ** (n - 1), 6 * 3600)
            assert full / 2 <= gap <= full, (n, gap)
        assert times[-1] - start >= timedelta(days=1) and times[-2] - start < timedelta(days=1)
        assert state["disabled_reason"] and state["failing_since"] == start.isoformat().replace("+00:00", "Z")
        assert len(receiver.requests) == len(times) == entry["attempts"]

        # Disabled: nothing more is sent, whatever the time.
        clock.advance(timedelta(days=2))
        await f.enroll(client)
        assert await deliver_all(app, clock) == 0
        f.assert_problem(await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{entry['id']}/redeliver"),
                         409, "webhook_disabled")

        # Back on: the endpoint resumes where it stopped (the pending delivery and the event meanwhile).
        receiver.status = 204
        r = await client.post(f"/v1/webhooks/{hook['id']}/enable")
        assert r.status_code == 200 and r.json()["status"] == "active"
        assert await deliver_all(app, clock) == 2
        log = await log_of(client, hook["id"])
        assert [d["status"] for d in log] == ["delivered", "delivered"]

        # Manual redelivery sends the event again.
        sent = len(receiver.requests)
        r = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{entry['id']}/redeliver")
        assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
        assert await deliver_all(app, clock) == 1
        assert receiver.requests[sent].event["id"] == entry["event_id"]


async def test_a_delivery_is_given_up_after_three_days(client, app, clock):
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    clock.freeze(start)
    with receiving() as receiver:
        hook = await subscribe(client, receiver)
        await f.enroll(client)
        receiver.failing_events = {(await client.get("/v1/events")).json()["data"][0]["id"]}
        assert await deliver_all(app, clock) == 1
        # Other events delivered now and then keep the endpoint from being disabled; this one keeps failing.
        while True:
            [*_, entry] = await log_of(client, hook["id"])
            if entry["status"] != "pending":
                break
            clock.freeze(datetime.fromisoformat(entry["next_attempt_at"]))
            await f.enroll(client)
            assert await deliver_all(app, clock) == 2
        assert entry["status"] == "failed" and entry["next_attempt_at"] is None
        assert datetime.fromisoformat(entry["last_attempt_at"]) - start <= timedelta(days=3)
        assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["status"] == "active"


async def test_a_disabled_endpoints_deliveries_stay_pending_with_no_next_attempt(client, app, clock):
    """DeliveryPublic: a disabled endpoint's deliveries stay ``pending`` (enabling it resumes them), and while it
    is disabled no next attempt is shown (the stored one, in the past, never comes)."""
    clock.freeze(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    with receiving() as receiver:
        receiver.status = 503
        hook = await subscribe(client, receiver)
        await f.enroll(client)
        assert await deliver_all(app, clock) == 1
        clock.advance(timedelta(days=1, minutes=1))
        await f.enroll(client)
        assert await deliver_all(app, clock) == 2
        assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["status"] == "disabled"
        clock.advance(timedelta(hours=1))
        log = await log_of(client, hook["id"])
        assert [(d["status"], d["next_attempt_at"]) for d in log] == [("pending", None)] * 2

        receiver.status = 200
        assert (await client.post(f"/v1/webhooks/{hook['id']}/enable")).status_code == 200
        assert all(d["next_attempt_at"] is not None for d in await log_of(client, hook["id"]))
        assert await deliver_all(app, clock) == 2
        assert [d["status"] for d in await log_of(client, hook["id"])] == ["delivered"] * 2


async def test_redeliver_waits_for_the_attempt_under_way(client, app, clock):
    """README: "two workers never send one delivery at once". Redelivering a delivery a worker is sending would
    clear its claim and let a second worker send it alongside: it is refused (409) until that attempt is
    recorded, or its lease has run out (the worker died)."""
    with receiving() as receiver:
        receiver.delay = 1.0
        hook = await subscribe(client, receiver)
        await f.enroll(client)
        db = app.state.db
        async with delivery.http_client() as http_a, delivery.http_client() as http_b:
            first = asyncio.create_task(delivery.deliver_once(db, clock, http_a))
            for _ in range(100):
                if receiver.requests:
                    break
                await asyncio.sleep(0.02)
            [entry] = await log_of(client, hook["id"])
            redeliver = f"/v1/webhooks/{hook['id']}/deliveries/{entry['id']}/redeliver"
            f.assert_problem(await client.post(redeliver), 409, "delivery_in_flight")
            second = asyncio.create_task(delivery.deliver_once(db, clock, http_b))
            await asyncio.sleep(0.3)
            at_once = len(receiver.requests)
            assert await asyncio.gather(first, second) == [1, 0]
        assert at_once == 1, f"the delivery was being sent {at_once} times at once"
        r = await client.post(redeliver)  # the attempt is recorded: redelivery sends it again
        assert r.status_code == 200 and r.json()["attempts"] == 0, r.text
        receiver.delay = 0
        assert await deliver_all(app, clock) == 1 and len(receiver.requests) == 2

        # A worker that claimed it and died: refused while its lease lasts, taken over once it has run out.
        await f.enroll(client)
        await events_service.publish_committed(db)
        await db.run(lambda session: delivery.fan_out(session, clock.now()))
        _, [job] = await db.run(lambda session: delivery.claim(session, clock.now()))
        redeliver = f"/v1/webhooks/{hook['id']}/deliveries/{job.delivery_id}/redeliver"
        f.assert_problem(await client.post(redeliver), 409, "delivery_in_flight")
        clock.advance(delivery.LEASE)
        assert (await client.post(redeliver)).status_code == 200
        assert await deliver_all(app, clock) == 1 and len(receiver.requests) == 3


async def test_webhook_validation_and_access(client, app, make_client):
    store = (await f.create_store(client))["id"]
    pos = make_client(await f.create_key(client, "pos", store))
    f.assert_problem(await pos.post("/v1/webhooks", json={"url": "https://example.com/h"}), 403, "forbidden")
    f.assert_problem(await client.post("/v1/webhooks", json={"url": "ftp://example.com/h"}), 422, "validation_error")
    f.assert_problem(await client.post("/v1/webhooks", json={"url": "https://example.com/h", "types": ["nope"]}),
                     422, "validation_error")
    f.assert_problem(await client.post("/v1/webhooks", json={"url": "https://example.com/h", "secret": "short"}),
                     422, "validation_error")
    # A URL AnyHttpUrl takes (kept as http://xn--ls8h.la/h) but the HTTP client cannot build a request for.
    r = await client.post("/v1/webhooks", json={"url": "http://\N{PILE OF POO}.la/h"})
    f.assert_problem(r, 422, "validation_error")
    assert "cannot be sent to" in r.text
    r = await client.post("/v1/webhooks", json={"url": "https://example.com/h"})
    assert r.status_code == 201 and r.json()["secret"].startswith("whsec_") and len(r.json()["secret"]) > 40
    f.assert_problem(await client.get("/v1/webhooks/whk_nope/deliveries"), 404, "webhook_not_found")
    f.assert_problem(await client.post(f"/v1/webhooks/{r.json()['id']}/deliveries/dlv_nope/redeliver"), 404,
                     "delivery_not_found")


async def test_an_endpoint_the_client_cannot_send_to_fails_alone(client, app, clock):
    """An endpoint stored before URLs were checked (``http://💩.la`` kept as ``xn--ls8h.la``: httpx raises
    ``idna.InvalidCodepoint``, not an ``httpx.HTTPError``) fails its own deliveries; the pass still records every
    outcome, so the other endpoints' deliveries are not sent again when the lease runs out."""
    with receiving() as receiver:
        good = await subscribe(client, receiver)
        bad = await subscribe(client, receiver)
        async with app.state.db.transaction() as session:
            await session.execute(update(Webhook).where(Webhook.id == bad["id"]).values(url="http://xn--ls8h.la/h"))
        await f.enroll(client)
        async with delivery.http_client() as http:
            for _ in range(3):
                assert await delivery.deliver_once(app.state.db, clock, http) <= 2
                clock.advance(delivery.LEASE)
        assert len(receiver.requests) == 1
        [sent] = await log_of(client, good["id"])
        assert (sent["status"], sent["attempts"]) == ("delivered", 1)
        [failed] = await log_of(client, bad["id"])
        assert failed["status"] == "pending" and failed["attempts"] == 3 and failed["last_status_code"] is None
        assert failed["last_error"].startswith("InvalidCodepoint: ")


def http_answer(status: str, body: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


async def timed_send(url: str, clock) -> tuple[delivery.Outcome, float]:
    job = delivery.Job("dlv_x", "whk_x", url, SECRET, "evt_x", b"{}")
    async with delivery.http_client() as http:
        started = time.monotonic()
        outcome = await delivery.send(http, job, clock)
    return outcome, time.monotonic() - started


async def test_a_send_is_bounded_in_all_and_reads_little_of_the_answer(clock, monkeypatch):
    """README: "10 s in all". httpx's timeouts bound each read, so a receiver sending its answer a byte at a time
    would hold a send for as long as it likes. Scaled down 20x: 0.5 s in all."""
    monkeypatch.setattr(delivery, "TIMEOUT", httpx.Timeout(0.5, connect=0.25))
    # The status line a byte every 0.1 s (about 4 s in all): cut off, a failure whatever status would come.
    with dribbling(http_answer("200 OK"), step=0.1) as (url, _):
        outcome, took = await timed_send(url, clock)
    assert (outcome.status_code, outcome.error) == (None, "TimeoutError: no answer within 0.5 s") and took < 1.5

    # A 200 at once and then a body that takes 4 s: the status is the answer; the body is not waited for.
    slow_body = http_answer("200 OK", b"x" * 40)
    with dribbling(slow_body, step=0.1, at_once=len(slow_body) - 40) as (url, _):
        outcome, took = await timed_send(url, clock)
    assert outcome.ok and took < 0.4, (outcome, took)

    # A refusal with a megabyte of body, the first 8 KB at once, the rest slowly: its first bytes give the reason.
    big = http_answer("503 Service Unavailable", b"down for maintenance " * 50_000)
    with dribbling(big, step=0.1, at_once=big.index(b"\r\n\r\n") + 4 + 8192) as (url, _):
        outcome, took = await timed_send(url, clock)
    assert outcome.status_code == 503 and took < 0.4, (outcome, took)
    assert outcome.error.startswith("HTTP 503: down for maintenance down for") and len(outcome.error) == 500


async def test_no_send_outlives_its_lease(client, app, clock, monkeypatch):
    """The lease keeps a second worker off a delivery while the first is sending it, so every send must end
    before its lease does. Scaled down 40x (10 s in all becomes 0.25 s, the lease 3 s): a receiver dribbling its
    answer over 6 s; worker A gives up at 0.25 s and records the failure, so when the lease has run out worker B
    finds the delivery waiting for its retry, not sendable again while A still sends it."""
    monkeypatch.setattr(delivery, "TIMEOUT", httpx.Timeout(0.25, connect=0.125))
    monkeypatch.setattr(delivery, "LEASE", delivery.LEASE / 40)
    answer = http_answer("200 OK")
    with dribbling(answer, step=6 / len(answer)) as (url, arrivals):
        r = await client.post("/v1/webhooks", json={"url": url, "secret": SECRET})
        assert r.status_code == 201, r.text
        await f.enroll(client)
        db = app.state.db
        async with delivery.http_client() as http_a, delivery.http_client() as http_b:
            first = asyncio.create_task(delivery.deliver_once(db, clock, http_a))
            await asyncio.sleep(0.5)
            assert len(arrivals) == 1
            clock.advance(delivery.LEASE)  # the lease has run out
            await asyncio.sleep(0.1)
            second = asyncio.create_task(delivery.deliver_once(db, clock, http_b))
            await asyncio.sleep(0.5)
            at_once = len(arrivals)
            attempted = await asyncio.gather(first, second)
        [entry] = await log_of(client, r.json()["id"])
    assert at_once == 1, f"the one delivery was being sent {at_once} times at once; log: {entry}"
    assert attempted == [1, 0]
    assert (entry["attempts"], entry["last_error"]) == (1, "TimeoutError: no answer within 0.25 s")


async def test_a_backlog_is_sent_as_fast_as_the_pool_allows_and_none_fails_waiting(client, app, clock, monkeypatch):
    """A claim of 50 through a pool of 20: were they all started at once, the last ones would wait for a
    connection within their own time limit, and with a receiver that is slow but within it they would fail
    (``PoolTimeout``) without ever being sent, counting toward disabling the endpoint. Scaled down (1.9 s in
    all; the receiver answers in 1 s, so the third round would start at 2 s)."""
    monkeypatch.setattr(delivery, "TIMEOUT", httpx.Timeout(1.9, connect=0.9))
    with receiving() as receiver:
        receiver.delay = 1.0
        hook = await subscribe(client, receiver)
        for _ in range(50):
            await f.enroll(client)
        async with delivery.http_client() as http:
            assert await delivery.deliver_once(app.state.db, clock, http) == 50
        log = await log_of(client, hook["id"])
        state = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    failed = sorted({d["last_error"] for d in log if d["status"] != "delivered"})
    assert not failed and len(receiver.requests) == 50, (failed, len(receiver.requests))
    assert state["failing_since"] is None


async def test_the_service_delivers_by_itself_when_its_worker_is_on(settings, clock, app):
    with receiving() as receiver:
        worker_app = create_app(settings.model_copy(update={"webhook_worker": True, "webhook_poll_seconds": 0.05}),
                                clock=clock, log=False)
        async with worker_app.router.lifespan_context(worker_app):
            import httpx

            from tests.conftest import ADMIN_KEY

            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=worker_app), base_url="http://test",
                                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
                await subscribe(c, receiver)
                member = (await f.enroll(c))["id"]
                for _ in range(100):
                    if receiver.requests:
                        break
                    await asyncio.sleep(0.05)
        assert [r.event["data"]["member_id"] for r in receiver.requests] == [member]


async def test_loyalty_deliver_once(client, app, cli_env, capsys):
    with receiving() as receiver:
        await subscribe(client, receiver)
        await f.enroll(client)
        await f.enroll(client)
        assert await run_cli("deliver", "--once") == 0
        assert "2 webhook deliveries attempted" in capsys.readouterr().out
        assert len(receiver.requests) == 2


async def test_deliver_once_delivers_an_event_behind_a_full_batch_of_others(client, app, cli_env):
    """An endpoint of top-ups only, 501 events of another type before its top-up: the fan-out reads 500 events an
    endpoint at a time, and a batch of none it takes made no delivery, so `loyalty deliver --once` attempted
    nothing and stopped with the top-up still due (the worker slept a poll interval per 500 such events)."""
    with receiving() as receiver:
        r = await client.post("/v1/webhooks", json={"url": receiver.url, "secret": SECRET,
                                                     "types": ["wallet.topped_up"]})
        assert r.status_code == 201, r.text
        async with app.state.db.transaction() as session:
            for i in range(delivery.FAN_OUT_BATCH + 1):
                await events_service.emit(session, "member.enrolled", {"member_id": f"mem_{i}", "referred_by": None},
                                          at=app.state.clock.now(), member_id=f"mem_{i}")
        member = (await f.enroll(client))["id"]
        r = await client.post(f"/v1/members/{member}/wallet/top-ups", json={"amount": 1000, "payment_ref": "t-1"},
                              headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text
        assert await run_cli("deliver", "--once") == 0
        assert [r.event["type"] for r in receiver.requests] == ["wallet.topped_up"]
