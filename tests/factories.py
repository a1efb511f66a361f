"""Factories for the data tests need: stores, keys, members. Each makes unique values so tests never collide."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Iterator

import httpx
from sqlalchemy import event, text

_seq = itertools.count(1)

PROBLEM = "application/problem+json"


def assert_problem(r, status: int, code: str) -> dict:
    """``r`` is a problem+json answer with this status and code, and every RFC 9457 member; its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["title"] and body["detail"] and body["type"]
    if code == "validation_error":  # API.md: "Validation errors add `errors: [{loc, msg}]`"
        assert body.get("errors") and all({"loc", "msg"} <= set(e) for e in body["errors"]), body
    return body


def unique_phone() -> str:
    """A valid US number in the 555-01xx-free range of area code 415 that no other test uses."""
    return f"+1415{random.randint(2000000, 9999999)}"


def unique_email() -> str:
    return f"member{next(_seq)}.{random.randint(0, 10**9)}@example.com"


async def create_store(client: httpx.AsyncClient, store_id: str | None = None, tz: str = "Europe/Berlin") -> dict:
    store_id = store_id or f"store-{next(_seq)}-{random.randint(0, 10**6)}"
    r = await client.post("/v1/stores", json={"id": store_id, "name": f"Store {store_id}", "timezone": tz})
    assert r.status_code == 201, r.text
    return r.json()


async def create_key(client: httpx.AsyncClient, role: str, store_id: str | None = None) -> str:
    body = {"role": role, "name": f"{role} key"}
    if store_id:
        body["store_id"] = store_id
    r = await client.post("/v1/api-keys", json=body)
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def enroll(client: httpx.AsyncClient, **fields) -> dict:
    body = {"name": "Jane Doe", "phone": unique_phone(), "email": unique_email(), **fields}
    body = {k: v for k, v in body.items() if v is not None}
    r = await client.post("/v1/members", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def new_key() -> str:
    return f"idem-{next(_seq)}-{random.randint(0, 10**9)}"


def line(line_id: str = "1", sku: str = "SKU-1", category: str = "general", quantity: int = 1,
         unit_price: int = 1000) -> dict:
    return {"line_id": line_id, "sku": sku, "category": category, "quantity": quantity, "unit_price": unit_price}


def basket(member_id: str, store_id: str, lines: list[dict] | None = None, *, points: int | None = None,
           currency: str = "USD", **extra) -> dict:
    body = {"member": {"member_id": member_id}, "store_id": store_id, "currency": currency,
            "lines": lines if lines is not None else [line()], **extra}
    if points is not None:
        body["redeem"] = {"points": points}
    return body


async def commit(client: httpx.AsyncClient, body: dict, *, receipt_id: str | None = None,
                 key: str | None = None) -> httpx.Response:
    body = {"receipt_id": receipt_id or f"r-{next(_seq)}-{random.randint(0, 10**9)}", **body}
    return await client.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": key or new_key()})


async def adjust(client: httpx.AsyncClient, member_id: str, amount: int, reason: str = "goodwill") -> dict:
    r = await client.post(f"/v1/members/{member_id}/points/adjustments", json={"amount": amount, "reason": reason},
                          headers={"Idempotency-Key": new_key()})
    assert r.status_code == 201, r.text
    return r.json()


async def balance(client: httpx.AsyncClient, member_id: str) -> int:
    r = await client.get(f"/v1/members/{member_id}/points")
    assert r.status_code == 200, r.text
    return r.json()["balance"]


async def set_program(client: httpx.AsyncClient, **changes) -> dict:
    """Change top-level program fields (``earn`` is merged one level deep)."""
    r = await client.get("/v1/program")
    program = r.json()
    for field, value in changes.items():
        if field == "earn":
            program["earn"] = {**program["earn"], **value}
        else:
            program[field] = value
    r = await client.put("/v1/program", json=program)
    assert r.status_code == 200, r.text
    return r.json()


async def verify_ledger(app) -> None:
    """Assert every ledger invariant of DESIGN §3 holds (what `loyalty verify` checks)."""
    from service import verification

    async with app.state.db.transaction(write=False) as session:
        report = await verification.verify(session)
    assert report.ok, report.problems


async def held(app, kind: str) -> int:
    """The balances of every account of this kind summed, debts included (straight from the accounts; the
    program's own accounts keep no balance): ``points`` for the members' points, ``gift_card`` for the cards."""
    from sqlalchemy import func, select

    from service.ledger.models import LedgerAccount

    async with app.state.db.transaction(write=False) as session:
        return int(await session.scalar(select(func.coalesce(func.sum(LedgerAccount.balance), 0)).where(
            LedgerAccount.kind == kind)))


def points_outstanding(flow: dict) -> int:
    """What the redemption report's points figures say the members hold: issued, less redeemed and expired, plus
    adjusted (each points movement has one of the program's four points accounts on its other side)."""
    return flow["issued"] - flow["redeemed"] - flow["expired"] + flow["adjusted"]


async def entry_count(app) -> int:
    from sqlalchemy import func, select

    from service.ledger.models import LedgerEntry

    async with app.state.db.transaction(write=False) as session:
        return int((await session.execute(select(func.count()).select_from(LedgerEntry))).scalar_one())


async def void(client: httpx.AsyncClient, transaction_id: str) -> httpx.Response:
    return await client.post(f"/v1/checkout/transactions/{transaction_id}/void",
                             headers={"Idempotency-Key": new_key()})


async def return_lines(client: httpx.AsyncClient, transaction_id: str, lines: dict[str, int]) -> httpx.Response:
    """Return ``{line_id: quantity}`` of a committed sale."""
    return await client.post(f"/v1/checkout/transactions/{transaction_id}/returns",
                             json={"lines": [{"line_id": k, "quantity": q} for k, q in lines.items()]},
                             headers={"Idempotency-Key": new_key()})


@contextlib.asynccontextmanager
async def row_held(app, sql: str, **params):
    """Hold the rows ``sql`` locks (``… FOR UPDATE``) from a connection of the test's own, as another request's
    transaction would, until the block ends or ``release()`` is awaited (PostgreSQL). Yields ``(release,
    waiting)``: ``await waiting(n)`` returns once ``n`` statements of this database wait on a lock."""
    async with app.state.db.engine.connect() as conn:
        assert (await conn.execute(text(sql), params)).all(), "nothing locked"

        async def waiting(n: int) -> None:
            query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND wait_event_type = 'Lock'")
            async with asyncio.timeout(10):  # fewer than n statements wait on a lock
                while True:
                    async with app.state.db.engine.connect() as probe:
                        if (await probe.execute(query)).scalar_one() >= n:
                            return
                    await asyncio.sleep(0.02)

        yield conn.rollback, waiting


@contextlib.contextmanager
def counted_statements(app) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs (listeners see the hot paths' ``db.fetch`` too)."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)
