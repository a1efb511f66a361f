"""A member's purchase history through HTTP: newest first by when each sale happened, statuses as they stand,
paged with ties at one instant kept apart, a till seeing only its own store's sales (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests import factories as f


async def history(c, member: str, **params) -> dict:
    r = await c.get(f"/v1/members/{member}/transactions", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def sale(client, member: str, store: str, at: datetime, amount: int, **extra) -> dict:
    body = {**f.basket(member, store, [f.line(unit_price=amount)], **extra), "occurred_at": at.isoformat()}
    r = await f.commit(client, body)
    assert r.status_code == 201, r.text
    return r.json()


async def test_newest_first_by_when_it_happened_with_statuses_and_figures(client, make_client, clock):
    now = datetime.now(UTC).replace(microsecond=0)
    clock.freeze(now)
    a, b = (await f.create_store(client))["id"], (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 500)
    old = await sale(client, member, a, now - timedelta(days=30), 2_000)
    newest = await sale(client, member, b, now - timedelta(hours=1), 1_000, redeem={"points": 100})
    middle = await sale(client, member, a, now - timedelta(days=2), 3_000)  # committed last, happened between
    assert (await f.void(client, old["id"])).status_code == 200
    assert (await f.return_lines(client, middle["id"], {"1": 1})).status_code == 201

    got = (await history(client, member))["data"]
    assert [s["id"] for s in got] == [newest["id"], middle["id"], old["id"]]
    assert [s["status"] for s in got] == ["committed", "returned", "voided"]
    assert got[0] == {"id": newest["id"], "receipt_id": newest["receipt_id"], "store_id": b, "status": "committed",
                      "occurred_at": newest["occurred_at"], "currency": "USD", "subtotal": 1_000, "discount": 100,
                      "net": 900, "points_earned": newest["earned"]["points"], "points_burned": 100}
    assert (await history(client, member))["next_cursor"] is None

    till_a = make_client(await f.create_key(client, "pos", a))
    till_b = make_client(await f.create_key(client, "pos", b))
    app = make_client(await f.create_key(client, "app"))
    assert [s["id"] for s in (await history(till_a, member))["data"]] == [middle["id"], old["id"]]
    assert [s["id"] for s in (await history(till_b, member))["data"]] == [newest["id"]]
    assert (await history(app, member))["data"] == got


async def test_pages_keep_sales_of_one_instant_apart(client):
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    at = datetime.now(UTC).replace(microsecond=123456) - timedelta(days=1)
    ids = [(await sale(client, member, store, at, 1_000 + i))["id"] for i in range(3)]
    ids.append((await sale(client, member, store, at - timedelta(microseconds=1), 500))["id"])
    other = (await f.enroll(client))["id"]
    await sale(client, other, store, at, 700)  # someone else's

    seen, after = [], None
    while True:
        page = await history(client, member, limit=2, **({"after": after} if after else {}))
        assert len(page["data"]) <= 2
        seen += [s["id"] for s in page["data"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == [*sorted(ids[:3], reverse=True), ids[3]]


async def test_an_unknown_member_or_a_foreign_cursor_is_refused(client):
    f.assert_problem(await client.get("/v1/members/mem_nobody/transactions"), 404, "member_not_found")
    member = (await f.enroll(client))["id"]
    for after in ("abc", "12", "_txn_1", "x_txn_1", "9" * 19 + "_txn_1", "9" * 18 + "_txn_1", "²_txn_1", "٣_txn_1"):
        f.assert_problem(await client.get(f"/v1/members/{member}/transactions", params={"after": after}), 422,
                         "validation_error")
    assert (await history(client, member, after="-5_txn_1"))["data"] == []  # before 1970: nothing, not an error
