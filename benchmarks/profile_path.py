"""Profile one request path in-process: where a look-up, quote or commit spends its time.

Runs the app against a database (PostgreSQL by default, the bench's own), seeds a few members, then calls the
chosen path N times sequentially under pyinstrument (``pip install pyinstrument``) and prints the tree, plus
the number of SQL statements per request. Sequential on purpose: the figure is the CPU and round trips of one
request, without queueing.

    .venv/bin/python benchmarks/profile_path.py commit --count 300
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import httpx
import orjson
from sqlalchemy import event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

ADMIN_KEY = "lk_profile_admin_key_0000000000"
STORE = "bench-store"
_seq = itertools.count()


def fresh(database: str) -> str:
    for sql in (f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", f"CREATE DATABASE {database}"):
        subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", sql], check=True)
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=ROOT, check=True,
                   env={"LOYALTY_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL)
    return url


def postgres_cpu() -> float:
    """Seconds of CPU used so far by every PostgreSQL server process on this machine (0 where /proc can't tell)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            if not fields[0].endswith("(postgres"):
                continue
            values = fields[1].split()
            total += int(values[11]) + int(values[12])  # utime, stime in clock ticks
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


class DirectClient:
    """Calls the app straight through ASGI, as a server would, without an HTTP client: httpx's in-process client
    costs about 0.2 ms of CPU per request itself, more than most differences measured here."""

    def __init__(self, app, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(b"host", b"t"), *((k.lower().encode(), v.encode()) for k, v in headers.items())]

    async def request(self, method: str, path: str, *, params: dict | None = None, json: dict | None = None,
                      headers: dict[str, str] | None = None) -> SimpleNamespace:
        body = orjson.dumps(json) if json is not None else b""
        extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if json is not None:
            extra.append((b"content-type", b"application/json"))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": urlencode(params or {}).encode(), "headers": [*self.headers, *extra],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        answer = SimpleNamespace(status_code=0, text="")
        chunks: list[bytes] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                answer.status_code = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        answer.text = b"".join(chunks).decode()
        return answer

    async def get(self, path: str, *, params: dict | None = None) -> SimpleNamespace:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, *, json: dict, headers: dict[str, str] | None = None) -> SimpleNamespace:
        return await self.request("POST", path, json=json, headers=headers)


def checkout_body(member_id: str, mode: str, voucher: str | None = None) -> dict:
    """The bench's basket (``benchmarks/lua/checkout.lua``): a quote names the member's voucher, as there."""
    lines = [{"line_id": str(i), "sku": f"SKU-{i}", "category": "bakery" if i == 1 else "general", "quantity": 1,
              "unit_price": 1000 + i} for i in range(3)]
    body = {"member": {"member_id": member_id}, "store_id": STORE, "currency": "USD", "lines": lines,
            "redeem": {"points": 100} | ({"vouchers": [voucher]} if voucher else {})}
    if mode == "commit":
        body["receipt_id"] = f"p-{next(_seq)}-{time.time_ns()}"
    return body


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=["lookup", "quote", "commit", "healthz"])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--database", default="loyalty_profile")
    parser.add_argument("--url", help="use this database URL as it is (no re-creation)")
    parser.add_argument("--no-profile", action="store_true", help="only time and count statements")
    parser.add_argument("--cprofile", action="store_true",
                        help="profile with cProfile instead and print the functions by their own time")
    parser.add_argument("--callers", help="with --cprofile: also print who calls the functions matching this")
    parser.add_argument("--show-sql", action="store_true", help="print the statements of one more request")
    parser.add_argument("--direct", action="store_true",
                        help="call the app through ASGI without an HTTP client (the server's own CPU only)")
    args = parser.parse_args()

    url = args.url or fresh(args.database)
    app = create_app(Settings(database_url=url, bootstrap_admin_key=ADMIN_KEY, webhook_worker=False), log=False)
    statements = 0
    async with app.router.lifespan_context(app):
        shown: list[str] = []

        def count(_conn, _cursor, statement, *_):
            nonlocal statements
            statements += 1
            shown.append(" ".join(statement.split())[:160])
        event.listen(app.state.db.engine.sync_engine, "before_cursor_execute", count)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
            await client.post("/v1/stores", json={"id": STORE, "name": "Bench", "timezone": "UTC"})
            r = await client.post("/v1/voucher-campaigns", json={
                "name": "Bakery 10 %", "kind": "percent_off", "value": 10, "categories": ["bakery"],
                "stackable": True})
            r.raise_for_status()
            campaign = r.json()["id"]
            members = []
            for i in range(20):
                r = await client.post("/v1/members", json={"name": f"Member {i}", "phone": f"+1415555{i:04d}"})
                r.raise_for_status()
                member = r.json()
                members.append(member)
                await client.post(f"/v1/members/{member['id']}/points/adjustments",
                                  json={"amount": 1_000_000, "reason": "profile"},
                                  headers={"Idempotency-Key": f"seed-{i}-{time.time_ns()}"})
                r = await client.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"member_id": member["id"]},
                                      headers={"Idempotency-Key": f"voucher-{i}-{time.time_ns()}"})
                r.raise_for_status()
                member["voucher"] = r.json()[0]["code"]

            caller = DirectClient(app, headers) if args.direct else client

            async def one(i: int) -> None:
                member = members[i % len(members)]
                if args.path == "healthz":
                    r = await caller.get("/healthz")
                elif args.path == "lookup":
                    r = await caller.get("/v1/members", params={"card_number": member["card_number"]})
                elif args.path == "quote":
                    r = await caller.post("/v1/checkout/quote",
                                          json=checkout_body(member["id"], "quote", member["voucher"]))
                else:
                    r = await caller.post("/v1/checkout/transactions", json=checkout_body(member["id"], "commit"),
                                          headers={"Idempotency-Key": f"k-{next(_seq)}-{time.time_ns()}"})
                if r.status_code >= 400:
                    raise SystemExit(f"{args.path} answered {r.status_code}: {r.text}")

            for i in range(20):  # warm-up
                await one(i)
            statements = 0
            profiler = None
            if args.cprofile:
                import cProfile
                profiler = cProfile.Profile()
                profiler.enable()
            elif not args.no_profile:
                from pyinstrument import Profiler
                profiler = Profiler(async_mode="enabled")
                profiler.start()
            started, cpu_started, pg_started = time.perf_counter(), time.process_time(), postgres_cpu()
            for i in range(args.count):
                await one(i)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            pg_cpu = postgres_cpu() - pg_started
            if args.cprofile:
                import pstats
                profiler.disable()
                stats = pstats.Stats(profiler).sort_stats("tottime")
                stats.print_stats(45)
                if args.callers:
                    stats.print_callers(args.callers)
                    stats.print_callees(args.callers)
            elif profiler:
                profiler.stop()
                print(profiler.output_text(unicode=True, color=False, show_all=False))
            if args.show_sql:
                shown.clear()
                await one(args.count)
                print("\n".join(f"{n:3d}. {sql}" for n, sql in enumerate(shown, 1)))
    print(f"{args.path}: {args.count} requests in {elapsed:.2f} s = {elapsed / args.count * 1000:.2f} ms each, "
          f"{cpu / args.count * 1000:.2f} ms of this process's CPU each, "
          f"{pg_cpu / args.count * 1000:.2f} ms of PostgreSQL's, "
          f"{statements / args.count:.1f} SQL statements each")


if __name__ == "__main__":
    asyncio.run(main())
