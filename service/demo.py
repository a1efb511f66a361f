"""``loyalty demo``: a program to try the service with, loaded through the same services the API calls.

Two stores (Berlin and Shanghai), a coffee punch card, a welcome voucher and a "spend 100, get 5" threshold
campaign, points doubled on coffee, a wallet top-up bonus and a birthday bonus, and twelve members in English
and Chinese whose year of purchases goes in through ``loyalty import``'s code (each a backdated sale through the
checkout: points, stamps, tiers and segments as at a till). Three members get the welcome voucher, two a wallet
top-up. A pos key per store and an app key are created and printed once, as ``loyalty keys create`` prints them.

The purchases are drawn from a fixed seed, so every demo holds the same sales. Running it again changes nothing:
the demo's stores tell that it is loaded.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service.auth import service as auth_service
from service.auth.rules import Principal
from service.auth.schemas import ApiKeyCreate
from service.clock import Clock
from service.db import Database
from service.imports import service as imports
from service.members import service as members_service
from service.program import service as program_service
from service.program.errors import StoreExists
from service.program.schemas import ProgramUpdate, StoreCreate
from service.punchcards import service as punchcards_service
from service.punchcards.schemas import PunchProgramCreate
from service.vouchers import service as vouchers_service
from service.vouchers.schemas import CampaignCreate, IssueRequest
from service.wallet import service as wallet_service
from service.wallet.schemas import TopUpCreate

ACTOR = "cli:demo"
DEMO = Principal(key_id=ACTOR, role="admin", store_id=None)
STORES = (("demo-berlin", "Berlin Mitte", "Europe/Berlin"), ("demo-shanghai", "Shanghai Jing'an", "Asia/Shanghai"))
# (sku, category, unit price in minor units)
CATALOG = (("LATTE", "coffee", 380), ("ESPRESSO", "coffee", 250), ("CROISSANT", "bakery", 290),
           ("NOVEL", "books", 1999), ("CD", "music", 1299), ("MUG", "home", 1490))
MEMBERS = (
    ("Anna Schmidt", "+4915112345601", "anna@example.com", "1988-03-14", "en"),
    ("Jonas Weber", "+4915112345602", "jonas@example.com", "1975-11-02", "en"),
    ("Lea Fischer", "+4915112345603", None, "1999-07-21", "en"),
    ("Tom Becker", None, "tom@example.com", None, "en"),
    ("Mia Wagner", "+4915112345605", "mia@example.com", "1993-12-06", "en"),
    ("Paul Hoffmann", "+4915112345606", None, "1968-05-30", "en"),
    ("王芳", "+8613812345607", "wangfang@example.com", "1990-02-18", "zh-CN"),
    ("李伟", "+8613812345608", None, "1985-09-09", "zh-CN"),
    ("张敏", "+8613812345609", "zhangmin@example.com", "2001-04-25", "zh-CN"),
    ("刘洋", None, "liuyang@example.com", "1979-12-01", "zh-CN"),
    ("陈静", "+8613812345611", None, None, "zh-CN"),
    ("Sophie Martin", "+4915112345612", "sophie@example.com", "1996-08-08", "en"),
)
SEED = 20261206


@dataclass
class Loaded:
    keys: dict[str, str] = field(default_factory=dict)  # what each key is for: its secret
    cards: list[tuple[str, str]] = field(default_factory=list)  # (name, card number)
    members: int = 0
    purchases: int = 0
    already: bool = False


def history(now: datetime) -> list[dict]:
    """The members as import lines, each with up to a year of purchases at the store of their city."""
    rng = random.Random(SEED)
    lines = []
    for n, (name, phone, email, birthday, locale) in enumerate(MEMBERS, start=1):
        store = STORES[1 if locale == "zh-CN" else 0][0]
        purchases = []
        for p in range(rng.choice((0, 1, 3, 6, 12, 20))):
            basket = rng.sample(CATALOG, rng.randint(1, 3))
            purchases.append({
                "store_id": store, "receipt_id": f"DEMO-{n:02d}-{p + 1:03d}",
                "occurred_at": (now - timedelta(days=rng.randint(2, 360), minutes=rng.randint(0, 600))).isoformat(),
                "lines": [{"line_id": str(i), "sku": sku, "category": category, "quantity": rng.randint(1, 2),
                           "unit_price": price} for i, (sku, category, price) in enumerate(basket, start=1)]})
        member = {"external_ref": f"demo-{n:02d}", "name": name, "locale": locale, "marketing_consent": n % 3 != 0,
                  "phone": phone, "email": email, "birthday": birthday, "purchases": purchases}
        lines.append({k: v for k, v in member.items() if v is not None})
    return lines


async def load(db: Database, clock: Clock, *, region: str) -> Loaded:
    loaded = Loaded()
    now = clock.now()

    async def configure(session) -> dict[str, str]:
        # The stores first: when the demo is loaded already, the first one exists (its unique id decides, not a
        # read beforehand) and the transaction rolls back having changed nothing.
        for store_id, name, timezone in STORES:
            await program_service.create_store(session, StoreCreate(id=store_id, name=name, timezone=timezone), clock,
                                               actor=ACTOR)
        program = await program_service.get(session)
        config = program.model_dump(mode="json")
        config["earn"]["category_multipliers"] = {"coffee": 2}
        config["wallet_top_up_bonuses"] = [{"min_amount": 5000, "bonus": 500}]
        config["birthday_bonus"] = {"points": 200}
        await program_service.update(session, ProgramUpdate.model_validate(config), clock, actor=ACTOR)
        await punchcards_service.create_program(session, PunchProgramCreate.model_validate({
            "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 9,
            "reward": {"categories": ["coffee"], "max_value": 500}, "reward_valid_days": 60}), clock, actor=ACTOR)
        welcome = await vouchers_service.create_campaign(session, CampaignCreate.model_validate({
            "name": "Welcome: 5.00 off 20.00", "kind": "amount_off", "value": 500, "min_spend": 2000,
            "valid_days": 30, "per_member_limit": 1}), clock, actor=ACTOR)
        await vouchers_service.create_campaign(session, CampaignCreate.model_validate({
            "name": "Spend 100, get 5", "kind": "amount_off", "value": 500, "min_spend": 2000, "valid_days": 60,
            "auto_issue": {"spend_threshold": 10_000}}), clock, actor=ACTOR)
        return {"welcome": welcome.id}

    try:
        campaigns = await db.run(configure)
    except StoreExists:
        loaded.already = True
        return loaded
    lines = [(n, json.dumps(member)) for n, member in enumerate(history(now), start=1)]
    tally = await imports.run(db, lines, clock, region=region, concurrency=1)
    if tally.failures:
        raise RuntimeError(f"the demo's members did not import: {tally.failures}")
    loaded.members, loaded.purchases = tally.members, tally.committed

    async def extras(session) -> None:
        members = {ref: await members_service.get(session, await imports.imported_member_id(session, ref))
                   for ref in ("demo-01", "demo-02", "demo-07", "demo-08", "demo-12")}
        for ref in ("demo-01", "demo-07", "demo-12"):
            await vouchers_service.issue(session, campaigns["welcome"], IssueRequest(member_id=members[ref].id), clock,
                                         actor=ACTOR)
        for ref, amount in (("demo-02", 5000), ("demo-08", 2000)):
            await wallet_service.top_up(session, members[ref].id, TopUpCreate(amount=amount, payment_ref="demo"),
                                        DEMO, clock)
        loaded.cards = [(members[ref].name, members[ref].card_number) for ref in ("demo-01", "demo-07", "demo-12")]
        keys = (("pos key, Berlin", "pos", STORES[0][0]), ("pos key, Shanghai", "pos", STORES[1][0]),
                ("app key", "app", None))
        for purpose, role, store in keys:
            body = ApiKeyCreate(role=role, store_id=store, name=f"demo {purpose}")
            _, secret = await auth_service.create(session, body, clock, actor=ACTOR)
            loaded.keys[purpose] = secret

    await db.run(extras)
    return loaded
