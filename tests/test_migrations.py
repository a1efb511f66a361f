"""Migrations that move data, run on a database of their own (SQLite file, or a scratch PostgreSQL database
beside the test database in the PostgreSQL pass)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from service import migrate
from service.app import create_app
from service.auth import service as auth_service
from service.clock import Clock
from service.program import service as program_service
from service.settings import Settings
from tests import factories as f
from tests.conftest import ADMIN_KEY, DATABASE_URL, IS_POSTGRES


async def _recreate_postgres(url: str) -> None:
    server = create_async_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = make_url(url).database
    try:
        async with server.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await server.dispose()


@pytest.fixture
def scratch_url(tmp_path) -> str:
    if not IS_POSTGRES:
        return f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
    url = make_url(DATABASE_URL).set(database=f"{make_url(DATABASE_URL).database}_migrations")
    rendered = url.render_as_string(hide_password=False)
    asyncio.run(_recreate_postgres(rendered))
    return rendered


async def _run(url: str, statements: list[tuple[str, dict]]) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = []
            for sql, params in statements:
                rows = await conn.execute(text(sql), params)
                result = rows.all() if rows.returns_rows else result
            return result
    finally:
        await engine.dispose()


def test_0013_names_the_member_of_enrolment_answers_kept_before_it(scratch_url):
    migrate.upgrade(scratch_url, "0012")
    enrolment = json.dumps({"id": "mem_grace", "card_number": "8000000000000018", "name": "Grace"}).encode()
    sale = json.dumps({"id": "txn_1", "member_id": "mem_grace", "totals": {"net": 100}}).encode()
    problem = json.dumps({"code": "member_exists", "detail": "card_number taken"}).encode()
    insert = ("INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, response_status, response_body, "
              "response_type, locked_at, created_at) VALUES ('key_1', :key, 'h', 'completed', :status, :body, "
              "'application/json', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    asyncio.run(_run(scratch_url, [(insert, {"key": "enrol", "status": 201, "body": enrolment}),
                                   (insert, {"key": "sale", "status": 201, "body": sale}),
                                   (insert, {"key": "refused", "status": 409, "body": problem}),
                                   (insert, {"key": "odd", "status": 201, "body": b"\xff \"card_number\" not json"})]))
    migrate.upgrade(scratch_url, "0013")
    rows = asyncio.run(_run(scratch_url, [("SELECT key, subject FROM idempotency_keys ORDER BY key", {})]))
    assert rows == [("enrol", "mem_grace"), ("odd", None), ("refused", None), ("sale", None)]
    migrate.downgrade(scratch_url, "0012")
    migrate.upgrade(scratch_url, "head")


def test_0017_rewrites_the_kept_enrolment_of_a_member_erased_before_0013(scratch_url):
    """Before 0013 an erasure left the enrolment's kept answer whole; 0013 named its member but did not rewrite it,
    and erasing the member again changed nothing: the name, phone, email and birthday stayed in idempotency_keys
    until the purge. 0017 rewrites it to the member as erased; an active member's answer and one rewritten
    already stay as they are."""
    migrate.upgrade(scratch_url, "0012")
    member = {"id": "mem_grace", "card_number": "8000000000000018", "name": "Grace Hopper", "phone": "+14155550123",
              "email": "grace@example.com", "birthday": "1906-12-09", "locale": "en-US", "marketing_consent": True,
              "external_ref": "crm-grace", "status": "active", "enrolled_at": "2026-01-05T10:00:00Z",
              "tier": "base", "referral_code": "GRACE123", "profile_completeness": 100}
    active = {**member, "id": "mem_ada", "card_number": "8000000000000026", "name": "Ada", "referral_code": "ADA1"}
    rewritten = {**member, "id": "mem_erased_later", "card_number": "8000000000000034", "referral_code": "LATER1",
                 "name": None, "status": "erased"}
    insert_member = ("INSERT INTO members (id, card_number, status, referral_code, tier_code, enrolled_at, updated_at, "
                     "erased_at) VALUES (:id, :card, :status, :code, :tier, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
                     "CURRENT_TIMESTAMP)")
    insert_kept = ("INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, response_status, "
                   "response_body, response_type, locked_at, created_at) VALUES ('key_1', :key, 'h', 'completed', "
                   "201, :body, 'application/json', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    asyncio.run(_run(scratch_url, [
        (insert_member, {"id": "mem_grace", "card": member["card_number"], "status": "erased", "code": "GRACE123",
                         "tier": "gold"}),
        (insert_member, {"id": "mem_ada", "card": active["card_number"], "status": "active", "code": "ADA1",
                         "tier": None}),
        (insert_member, {"id": "mem_erased_later", "card": rewritten["card_number"], "status": "erased",
                         "code": "LATER1", "tier": None}),
        *((insert_kept, {"key": key, "body": json.dumps(body).encode()})
          for key, body in (("grace", member), ("ada", active), ("later", rewritten))),
    ]))
    migrate.upgrade(scratch_url, "head")
    rows = asyncio.run(_run(scratch_url, [("SELECT key, subject, response_body FROM idempotency_keys", {})]))
    assert not any(b"Grace" in bytes(body) or b"grace@" in bytes(body) or b"1906" in bytes(body)
                   for key, _, body in rows if key == "grace")
    kept = {key: (subject, json.loads(bytes(body))) for key, subject, body in rows}
    assert kept["grace"] == ("mem_grace", {
        **member, "name": None, "phone": None, "email": None, "birthday": None, "locale": "en",
        "marketing_consent": None, "external_ref": None, "status": "erased", "tier": "gold",
        "profile_completeness": 0})
    assert kept["ada"] == ("mem_ada", active) and kept["later"] == ("mem_erased_later", rewritten)
    migrate.downgrade(scratch_url, "0016")
    migrate.upgrade(scratch_url, "head")


def _receipts(url: str, work) -> dict:
    """Run ``work(client)`` against the app on ``url`` (migrated to head); what it returns."""
    async def run():
        app = create_app(Settings(database_url=url, bootstrap_admin_key=ADMIN_KEY, currency="USD",
                                  log_level="WARNING", webhook_worker=False), clock=Clock(), log=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
                return await work(client)
    auth_service.forget_cached_keys()
    program_service.forget_cached()
    return asyncio.run(run())


def test_0014_fills_in_the_wallet_each_earlier_sale_left(scratch_url):
    migrate.upgrade(scratch_url, "head")

    async def sales(client) -> list[str]:
        store = (await f.create_store(client))["id"]
        member = (await f.enroll(client))["id"]
        other = (await f.enroll(client))["id"]
        ids = []

        async def top_up(who: str, amount: int) -> None:
            r = await client.post(f"/v1/members/{who}/wallet/top-ups", json={"amount": amount, "payment_ref": "m"},
                                  headers={"Idempotency-Key": f.new_key()})
            assert r.status_code == 201, r.text

        async def sale(who: str, wallet: int = 0) -> None:
            body = f.basket(who, store, [f.line(unit_price=500)], **({"redeem": {"wallet_amount": wallet}}
                                                                   if wallet else {}))
            r = await f.commit(client, body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

        await top_up(member, 1000)
        await sale(member, 300)
        await top_up(other, 900)
        await top_up(member, 500)
        await sale(member)
        await sale(other, 400)
        await sale(member, 200)
        assert (await f.void(client, ids[-1])).status_code == 200
        await top_up(member, 100)
        return ids

    async def read(client, ids: list[str]) -> list[int]:
        return [(await client.get(f"/v1/checkout/transactions/{i}")).json()["balances_after"]["wallet"] for i in ids]

    ids = _receipts(scratch_url, sales)
    kept = _receipts(scratch_url, lambda client: read(client, ids))
    assert kept == [700, 1200, 500, 1000]
    migrate.downgrade(scratch_url, "0013")
    migrate.upgrade(scratch_url, "head")  # 0014 fills the column in again; the app reads the schema at head
    assert _receipts(scratch_url, lambda client: read(client, ids)) == kept


def test_0020_fills_in_what_each_earlier_punch_reward_cost_from_its_sales_ledger(scratch_url):
    """Rewards issued before 0020 take the stamps their sale's ``reward`` entries took (not the programme's figure
    since: it may have been edited); one the ledger cannot account for takes the programme's current figure."""
    migrate.upgrade(scratch_url, "head")

    async def sales(client) -> dict:
        store = (await f.create_store(client))["id"]
        member = (await f.enroll(client))["id"]
        body = {"name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 5,
                "reward": {}, "reward_valid_days": 30}
        program = (await client.post("/v1/punch-card-programs", json=body)).json()
        r = await f.commit(client, f.basket(member, store, [f.line("c", "LATTE", "coffee", 12, 400)]))
        assert len(r.json()["earned"]["rewards_issued"]) == 2, r.text
        r = await client.put(f"/v1/punch-card-programs/{program['id']}", json={**body, "stamps_required": 3})
        assert r.status_code == 200, r.text
        r = await f.commit(client, f.basket(member, store, [f.line("c", "LATTE", "coffee", 1, 400)]))
        assert len(r.json()["earned"]["rewards_issued"]) == 1, r.text  # 2 + 1 = 3 stamps
        r = await client.put(f"/v1/punch-card-programs/{program['id']}", json={**body, "stamps_required": 7})
        assert r.status_code == 200, r.text
        return {"member": member, "program": program["id"]}

    made = _receipts(scratch_url, sales)
    costs = "SELECT stamps_cost, COUNT(*) FROM punch_rewards GROUP BY stamps_cost ORDER BY stamps_cost"
    assert asyncio.run(_run(scratch_url, [(costs, {})])) == [(3, 1), (5, 2)]
    migrate.downgrade(scratch_url, "0019")
    asyncio.run(_run(scratch_url, [(
        "INSERT INTO punch_rewards (id, member_id, program_id, status, issued_at, expires_at, changed_at) "
        "VALUES ('rwd_unaccounted', :member, :program, 'available', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP)", made)]))
    migrate.upgrade(scratch_url, "0020")
    assert asyncio.run(_run(scratch_url, [(costs, {})])) == [(3, 1), (5, 2), (7, 1)]


def test_0021_gives_each_earlier_threshold_voucher_its_campaigns_threshold(scratch_url):
    """Vouchers a sale earned before 0021 take their campaign's threshold as it stands (what their returns were
    judged against until then); vouchers issued otherwise keep none."""
    migrate.upgrade(scratch_url, "head")

    async def sales(client) -> None:
        store = (await f.create_store(client))["id"]
        member = (await f.enroll(client))["id"]
        spend = (await client.post("/v1/voucher-campaigns", json={
            "name": "Spend 100", "kind": "amount_off", "value": 500, "auto_issue": {"spend_threshold": 10_000}})).json()
        r = await f.commit(client, f.basket(member, store, [f.line(unit_price=10_000)]))
        assert len(r.json()["earned"]["vouchers_issued"]) == 1, r.text
        r = await client.post(f"/v1/voucher-campaigns/{spend['id']}/vouchers", json={"member_id": member},
                              headers={"Idempotency-Key": f.new_key()})
        assert r.status_code == 201, r.text

    _receipts(scratch_url, sales)
    kept = "SELECT issued_by IS NOT NULL, earned_threshold FROM vouchers ORDER BY 1"
    assert asyncio.run(_run(scratch_url, [(kept, {})])) == [(False, None), (True, 10_000)]
    migrate.downgrade(scratch_url, "0020")
    asyncio.run(_run(scratch_url, [("UPDATE voucher_campaigns SET auto_issue_spend_threshold = 15000", {})]))
    migrate.upgrade(scratch_url, "0021")
    assert asyncio.run(_run(scratch_url, [(kept, {})])) == [(False, None), (True, 15_000)]


def test_0022_gives_each_earlier_punch_reward_its_programmes_terms(scratch_url):
    """Rewards issued before 0022 take what their programme makes free as it stands: its reward items, or its
    qualifying items when it names none, and its cap."""
    migrate.upgrade(scratch_url, "head")

    async def sales(client) -> None:
        store = (await f.create_store(client))["id"]
        member = (await f.enroll(client))["id"]
        for reward in ({"categories": ["bakery"], "max_value": 300}, {}):
            body = {"name": "Card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 1,
                    "reward": reward, "reward_valid_days": 30}
            assert (await client.post("/v1/punch-card-programs", json=body)).status_code == 201
        r = await f.commit(client, f.basket(member, store, [f.line("c", "LATTE", "coffee", 1, 400)]))
        assert len(r.json()["earned"]["rewards_issued"]) == 2, r.text

    _receipts(scratch_url, sales)
    terms = "SELECT free_skus, free_categories, free_max_value FROM punch_rewards ORDER BY free_max_value"
    expected = [([], ["bakery"], 300), ([], ["coffee"], None)]

    def read() -> list:
        return sorted(((json.loads(a) if isinstance(a, str) else a, json.loads(b) if isinstance(b, str) else b, c)
                       for a, b, c in asyncio.run(_run(scratch_url, [(terms, {})]))), key=lambda t: t[1])

    assert read() == expected
    asyncio.run(_run(scratch_url, [("UPDATE punch_rewards SET free_skus = '[\"X\"]', free_categories = '[]', "
                                    "free_max_value = 1", {})]))
    migrate.downgrade(scratch_url, "0021")
    migrate.upgrade(scratch_url, "0022")
    assert read() == expected
