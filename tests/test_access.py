"""Access matrix: every route of the app × every kind of caller, with the answer each must get.

``ACCESS`` below is the table. Its rows are enumerated against the app's own routes: a route without a row
fails ``test_every_route_has_a_row`` (naming the route), and so does a row for a route that no longer exists.

Callers (columns): no key, a bad key, admin, app, a pos key of the store the request is about ("pos"), and a
pos key of another store ("pos_other"). Each cell sends a valid request built on fresh data (a fresh member, a
fresh sale at store A, …), so an allowed caller must succeed (2xx) and a refused one gets exactly the status
written down; a refused write must leave no trace (checked for the checkout routes below).

Adding a route: one ``Row`` (expected statuses; ``body`` builds a valid body from the ``World``) and, if the
path has a new ``{parameter}``, a resolver for it in ``World.resolve``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from service.app import create_app
from service.events import delivery
from service.events import service as events_service
from service.settings import Settings
from tests.factories import basket, create_key, create_store, enroll, line, new_key, unique_email, unique_phone

OK = "2xx"
CALLERS = ("no_key", "bad_key", "admin", "app", "pos", "pos_other")
_seq = itertools.count(1)


class World:
    """Two stores with a pos key each, an app key, and fresh resources on demand (created by the admin)."""

    def __init__(self, admin: httpx.AsyncClient, app=None) -> None:
        self.admin = admin
        self.app = app
        self.store_a = self.store_b = ""
        self.pin = ""  # the PIN of the last gift card made
        self.webhook = ""  # the last webhook made (a delivery belongs to it)

    async def start(self) -> dict[str, str | None]:
        self.store_a = (await create_store(self.admin))["id"]
        self.store_b = (await create_store(self.admin))["id"]
        return {"no_key": None, "bad_key": "lk_not_a_key_0000000000000000000000000000000",
                "admin": None,  # the admin client's own key
                "app": await create_key(self.admin, "app"),
                "pos": await create_key(self.admin, "pos", self.store_a),
                "pos_other": await create_key(self.admin, "pos", self.store_b)}

    async def member(self) -> str:
        member = await enroll(self.admin)
        r = await self.admin.post(f"/v1/members/{member['id']}/points/adjustments",
                                  json={"amount": 500, "reason": "access"}, headers={"Idempotency-Key": new_key()})
        assert r.status_code == 201, r.text
        r = await self.admin.post(f"/v1/members/{member['id']}/wallet/top-ups",
                                  json={"amount": 1000, "payment_ref": "access"},
                                  headers={"Idempotency-Key": new_key()})
        assert r.status_code == 201, r.text
        return member["id"]

    async def sale(self) -> str:
        """A committed sale at store A (two units of line 1)."""
        body = {**basket(await self.member(), self.store_a, [line("1", quantity=2)]),
                "receipt_id": f"acc-{next(_seq)}"}
        r = await self.admin.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": new_key()})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def receipt(self) -> str:
        """The receipt number of a committed sale at store A."""
        sale = (await self.admin.get(f"/v1/checkout/transactions/{await self.sale()}")).json()
        return sale["receipt_id"]

    async def store(self) -> str:
        return self.store_a

    async def punch_program(self) -> str:
        r = await self.admin.post("/v1/punch-card-programs", json=punch_program_body())
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def throwaway_key(self) -> str:
        r = await self.admin.post("/v1/api-keys", json={"role": "app", "name": "to revoke"})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def campaign(self) -> str:
        r = await self.admin.post("/v1/voucher-campaigns", json=campaign_body())
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def voucher_code(self) -> str:
        r = await self.admin.post(f"/v1/voucher-campaigns/{await self.campaign()}/vouchers", json={"count": 1},
                                  headers={"Idempotency-Key": new_key()})
        assert r.status_code == 201, r.text
        return r.json()[0]["code"]

    async def gift_card_code(self) -> str:
        r = await self.admin.post("/v1/gift-cards", json={"amount": 1000}, headers={"Idempotency-Key": new_key()})
        assert r.status_code == 201, r.text
        card = r.json()[0]
        self.pin = card["pin"]
        return card["code"]

    async def gift_card_pin(self) -> dict:
        return {"X-Gift-Card-Pin": self.pin}

    async def webhook_id(self) -> str:
        r = await self.admin.post("/v1/webhooks", json=webhook_body())
        assert r.status_code == 201, r.text
        self.webhook = r.json()["id"]
        return self.webhook

    async def delivery_id(self) -> str:
        """A delivery of the last webhook made: an event after it, fanned out as the delivery worker does."""
        await self.member()
        db = self.app.state.db
        await events_service.publish_committed(db)
        async with db.transaction() as session:
            await delivery.fan_out(session, self.app.state.clock.now())
        r = await self.admin.get(f"/v1/webhooks/{self.webhook}/deliveries")
        assert r.status_code == 200 and r.json()["data"], r.text
        return r.json()["data"][0]["id"]

    async def resolve(self, parameter: str, template: str) -> str:
        resolvers: dict[str, Callable[[], Awaitable[str]]] = {
            "member_id": self.member, "transaction_id": self.sale, "program_id": self.punch_program,
            "key_id": self.throwaway_key, "campaign_id": self.campaign, "webhook_id": self.webhook_id,
            "delivery_id": self.delivery_id, "store_id": self.store, "receipt_id": self.receipt,
            "code": self.gift_card_code if template.startswith("/v1/gift-cards/") else self.voucher_code}
        if parameter not in resolvers:
            raise AssertionError(f"no resolver for path parameter {{{parameter}}}: add one to World.resolve")
        return await resolvers[parameter]()

    async def lookup_query(self) -> dict:
        member = (await self.admin.get(f"/v1/members/{await self.member()}")).json()
        return {"phone": member["phone"]}

    async def current_program(self) -> dict:
        return (await self.admin.get("/v1/program")).json()


def campaign_body() -> dict:
    return {"name": "Five off", "kind": "amount_off", "value": 500}


def webhook_body() -> dict:
    return {"url": "http://127.0.0.1:9/loyalty-events"}


def punch_program_body() -> dict:
    return {"name": "Coffee card", "qualifying": {"skus": [], "categories": ["coffee"]}, "stamps_required": 5,
            "reward": {"skus": [], "categories": ["coffee"], "max_value": 500}, "reward_valid_days": 30,
            "active": True}


async def _quote_body(w: World) -> dict:
    return basket(await w.member(), w.store_a)


async def _commit_body(w: World) -> dict:
    return {**basket(await w.member(), w.store_a), "receipt_id": f"acc-{next(_seq)}"}


@dataclass(frozen=True)
class Row:
    """Expected answer per caller; ``body`` builds a valid request body for the route."""

    admin: int | str
    app: int | str
    pos: int | str
    pos_other: int | str
    no_key: int | str = 401
    bad_key: int | str = 401
    body: Callable[[World], Awaitable[Any]] | None = None
    query: Callable[[World], Awaitable[dict]] | None = None
    headers: Callable[[World], Awaitable[dict]] | None = None

    def expected(self, caller: str) -> int | str:
        return getattr(self, caller)


def _const(value: Any) -> Callable[[World], Awaitable[Any]]:
    async def build(_: World) -> Any:
        return value() if callable(value) else value
    return build


FEED = Row(admin=OK, app=OK, pos=403, pos_other=403)  # the app backend's reads: events, ranked offers
PUBLIC = Row(admin=OK, app=OK, pos=OK, pos_other=OK, no_key=OK, bad_key=OK)
ANYONE = Row(admin=OK, app=OK, pos=OK, pos_other=OK)  # any valid key (members are shared by every store)
ADMIN_ONLY = Row(admin=OK, app=403, pos=403, pos_other=403)
TILL = Row(admin=OK, app=403, pos=OK, pos_other=403)  # a store's transactions: admin and that store's tills


def _with(row: Row, body: Callable[[World], Awaitable[Any]] | None = None,
          query: Callable[[World], Awaitable[dict]] | None = None,
          headers: Callable[[World], Awaitable[dict]] | None = None) -> Row:
    return dataclasses.replace(row, body=body, query=query, headers=headers)


# Path templates as the app declares them. Statuses: OK means any 2xx.
ACCESS: dict[str, Row] = {
    "GET /healthz": PUBLIC,
    "GET /readyz": PUBLIC,
    "GET /metrics": PUBLIC,
    # keys and configuration: admin only; every role may read the program and the stores
    "POST /v1/api-keys": _with(ADMIN_ONLY, _const({"role": "app", "name": "made in the access test"})),
    "GET /v1/api-keys": ADMIN_ONLY,
    "DELETE /v1/api-keys/{key_id}": ADMIN_ONLY,
    "GET /v1/program": ANYONE,
    "PUT /v1/program": _with(ADMIN_ONLY, World.current_program),
    "GET /v1/stores": ANYONE,
    "POST /v1/stores": _with(ADMIN_ONLY, _const(lambda: {"id": f"acc-store-{next(_seq)}", "name": "New",
                                                         "timezone": "UTC"})),
    # members: every role; erasure by admin and the app (the member's own request), not by a till
    "POST /v1/members": _with(ANYONE, _const(lambda: {"name": "Access Test", "phone": unique_phone(),
                                                      "email": unique_email()})),
    "GET /v1/members": _with(ANYONE, query=World.lookup_query),
    "GET /v1/members/{member_id}": ANYONE,
    "PATCH /v1/members/{member_id}": _with(ANYONE, _const({"name": "Renamed"})),
    "DELETE /v1/members/{member_id}": Row(admin=OK, app=OK, pos=403, pos_other=403),
    "GET /v1/members/{member_id}/summary": ANYONE,
    "GET /v1/members/{member_id}/points": ANYONE,
    "GET /v1/members/{member_id}/ledger": ANYONE,
    "GET /v1/members/{member_id}/transactions": ANYONE,
    "POST /v1/members/{member_id}/points/adjustments": _with(ADMIN_ONLY, _const({"amount": 10, "reason": "acc"})),
    "GET /v1/members/{member_id}/tier": ANYONE,
    "GET /v1/members/{member_id}/punch-cards": ANYONE,
    "GET /v1/members/{member_id}/wallet": ANYONE,
    # a top-up is a till's job too (any store: the wallet is the member's, not a store's)
    "POST /v1/members/{member_id}/wallet/top-ups": _with(Row(admin=OK, app=403, pos=OK, pos_other=OK),
                                                         _const({"amount": 500, "payment_ref": "acc"})),
    "POST /v1/members/{member_id}/wallet/cash-out": ADMIN_ONLY,
    "GET /v1/reports/liability": ADMIN_ONLY,
    "GET /v1/reports/redemptions": ADMIN_ONLY,
    "GET /v1/audit-log": ADMIN_ONLY,
    # punch-card programmes: configuration
    "POST /v1/punch-card-programs": _with(ADMIN_ONLY, _const(punch_program_body)),
    "GET /v1/punch-card-programs": ADMIN_ONLY,
    "GET /v1/punch-card-programs/{program_id}": ADMIN_ONLY,
    "PUT /v1/punch-card-programs/{program_id}": _with(ADMIN_ONLY, _const(punch_program_body)),
    # checkout: bodies and transactions name store A
    "POST /v1/checkout/quote": _with(TILL, _quote_body),
    "POST /v1/checkout/transactions": _with(TILL, _commit_body),
    "GET /v1/checkout/transactions/{transaction_id}": TILL,
    "GET /v1/stores/{store_id}/receipts/{receipt_id}": TILL,
    "POST /v1/checkout/transactions/{transaction_id}/void": TILL,
    "POST /v1/checkout/transactions/{transaction_id}/returns": _with(
        TILL, _const({"lines": [{"line_id": "1", "quantity": 1}]})),
    # gift cards: issued by the admin; a card is checked with its PIN by any role (the till, the app)
    "POST /v1/gift-cards": _with(ADMIN_ONLY, _const({"amount": 1000, "count": 1})),
    "GET /v1/gift-cards/{code}": _with(ANYONE, headers=World.gift_card_pin),
    # vouchers: campaigns are configuration; a member's vouchers and a code's details are for every role
    "POST /v1/voucher-campaigns": _with(ADMIN_ONLY, _const(campaign_body)),
    "GET /v1/voucher-campaigns": ADMIN_ONLY,
    "GET /v1/voucher-campaigns/{campaign_id}": ADMIN_ONLY,
    "PUT /v1/voucher-campaigns/{campaign_id}": _with(ADMIN_ONLY, _const(campaign_body)),
    "POST /v1/voucher-campaigns/{campaign_id}/vouchers": _with(ADMIN_ONLY, _const({"count": 1})),
    "GET /v1/members/{member_id}/vouchers": ANYONE,
    "GET /v1/vouchers/{code}": ANYONE,
    # personalization: the segment at the till too; ranked offers are the app's; the report is the admin's
    "GET /v1/members/{member_id}/segment": ANYONE,
    "GET /v1/members/{member_id}/offers": FEED,
    "GET /v1/reports/segments": ADMIN_ONLY,
    # events and webhooks: the feed for the app backend; webhooks are configuration
    "GET /v1/events": FEED,
    "POST /v1/webhooks": _with(ADMIN_ONLY, _const(webhook_body)),
    "GET /v1/webhooks": ADMIN_ONLY,
    "GET /v1/webhooks/{webhook_id}": ADMIN_ONLY,
    "DELETE /v1/webhooks/{webhook_id}": ADMIN_ONLY,
    "POST /v1/webhooks/{webhook_id}/enable": ADMIN_ONLY,
    "GET /v1/webhooks/{webhook_id}/deliveries": ADMIN_ONLY,
    "POST /v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": ADMIN_ONLY,
}


def app_routes() -> set[str]:
    """Every HTTP route the app serves (its documentation pages aside), as ``METHOD /path``."""
    app = create_app(Settings(database_url="sqlite+aiosqlite://", bootstrap_admin_key=None), log=False)
    return {f"{method} {context.path_format}" for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute) for method in context.original_route.methods - {"HEAD"}}


def test_every_route_has_a_row() -> None:
    routes = app_routes()
    missing = sorted(routes - ACCESS.keys())
    stale = sorted(ACCESS.keys() - routes)
    assert not missing, f"routes without a row in tests/test_access.py ACCESS: {missing}"
    assert not stale, f"rows in tests/test_access.py ACCESS for routes the app no longer has: {stale}"


def _matches(status: int, expected: int | str) -> bool:
    return 200 <= status < 300 if expected == OK else status == expected


@dataclass
class Cell:
    caller: str
    expected: int | str
    status: int
    body: str = field(repr=False)


@pytest.mark.parametrize("route", sorted(ACCESS))
async def test_access(route: str, app, client: httpx.AsyncClient, make_client) -> None:
    row = ACCESS[route]
    method, template = route.split(" ", 1)
    world = World(client, app)
    keys = await world.start()
    results: list[Cell] = []
    for caller in CALLERS:
        path = template
        for parameter in _parameters(template):
            path = path.replace(f"{{{parameter}}}", await world.resolve(parameter, template))
        body = await row.body(world) if row.body else None
        query = await row.query(world) if row.query else None
        caller_client = client if caller == "admin" else make_client(keys[caller])
        headers = {"Idempotency-Key": new_key()} if method != "GET" else {}
        if row.headers:
            headers.update(await row.headers(world))
        r = await caller_client.request(method, path, json=body, params=query, headers=headers)
        results.append(Cell(caller, row.expected(caller), r.status_code, r.text[:300]))
    wrong = [c for c in results if not _matches(c.status, c.expected)]
    assert not wrong, f"{route}: " + "; ".join(
        f"{c.caller} expected {c.expected}, got {c.status} {c.body}" for c in wrong)


def _parameters(template: str) -> list[str]:
    return re.findall(r"{(\w+)}", template)


async def test_a_refused_till_leaves_no_trace(client: httpx.AsyncClient, make_client) -> None:
    """A pos key of store B refused on store A's sale changes nothing: the sale stays committed and whole, and a
    receipt number it tried to commit at store A is still free for store A's own till."""
    world = World(client)
    keys = await world.start()
    other, own = make_client(keys["pos_other"]), make_client(keys["pos"])
    sale = await world.sale()
    before = (await client.get(f"/v1/checkout/transactions/{sale}")).json()
    for path, body in ((f"/v1/checkout/transactions/{sale}/void", None),
                       (f"/v1/checkout/transactions/{sale}/returns", {"lines": [{"line_id": "1", "quantity": 1}]})):
        r = await other.post(path, json=body, headers={"Idempotency-Key": new_key()})
        assert r.status_code == 403, r.text
    assert (await client.get(f"/v1/checkout/transactions/{sale}")).json() == before
    body = {**basket(await world.member(), world.store_a), "receipt_id": f"acc-{next(_seq)}"}
    r = await other.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": new_key()})
    assert r.status_code == 403, r.text
    r = await own.post("/v1/checkout/transactions", json=body, headers={"Idempotency-Key": new_key()})
    assert r.status_code == 201, r.text
