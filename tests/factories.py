"""Factories for the data tests need: stores, keys, members. Each makes unique values so tests never collide."""

from __future__ import annotations

import itertools
import random

import httpx

_seq = itertools.count(1)


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
