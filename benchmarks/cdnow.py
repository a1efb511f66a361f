"""Replay the CDNOW customer base (``../shared/data/cdnow_master.txt``) through the HTTP API.

One member per customer (``external_ref`` = ``cdnow-<id>``), one checkout per purchase at its date as a
backdated commit (``occurred_at``, admin key): a line of ``number_of_cds`` units at ``value // units`` minor
units and, where that leaves a remainder, one unit on a line of its own carrying it; 0.00 purchases are skipped.
Each customer's purchases go in date order through one connection; customers run concurrently.

    python benchmarks/cdnow.py --base http://127.0.0.1:8000 --key <admin key> [--limit N] [--concurrency 32]
                               [--sweep [--as-of 1998-07-01T00:00:00Z]] [--skip-replay]
    python benchmarks/cdnow.py --write-import cdnow.jsonl [--limit N]   # then: loyalty import cdnow.jsonl

``--sweep`` then runs ``loyalty sweep --as-of`` (the end of the data by default) on the server's database (set
``LOYALTY_DATABASE_URL`` as the server has it), times it, and prints the segment report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from service.progress import Progress

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow_master.txt"
STORE = "cdnow"
END_OF_DATA = "1998-07-01T00:00:00+00:00"


@dataclass(frozen=True, slots=True)
class Purchase:
    customer: str
    day: str  # YYYYMMDD
    units: int
    cents: int


def read_purchases(path: Path = DATA) -> dict[str, list[Purchase]]:
    """Purchases by customer, in file (= date) order; 0.00 purchases left out."""
    by_customer: dict[str, list[Purchase]] = defaultdict(list)
    with path.open() as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4 or not parts[0].isdigit():
                continue
            customer, day, units, value = parts
            cents = round(float(value) * 100)
            by_customer[customer]  # every customer becomes a member, even one whose purchases were all 0.00
            if cents > 0 and int(units) > 0:
                by_customer[customer].append(Purchase(customer, day, int(units), cents))
    return by_customer


def basket_lines(purchase: Purchase) -> list[dict]:
    """``units`` at ``cents // units``; the remainder, if any, on one unit of its own line."""
    unit_price, remainder = divmod(purchase.cents, purchase.units)
    if remainder == 0:
        return [{"line_id": "1", "sku": "CD", "category": "music", "quantity": purchase.units,
                 "unit_price": unit_price}]
    lines = [{"line_id": "2", "sku": "CD", "category": "music", "quantity": 1, "unit_price": unit_price + remainder}]
    if purchase.units > 1:
        lines.insert(0, {"line_id": "1", "sku": "CD", "category": "music", "quantity": purchase.units - 1,
                         "unit_price": unit_price})
    return lines


def occurred_at(day: str) -> str:
    return datetime.strptime(day, "%Y%m%d").replace(hour=12, tzinfo=UTC).isoformat()


def checkout_body(member_id: str, purchase: Purchase, index: int, currency: str) -> dict:
    return {"member": {"member_id": member_id}, "store_id": STORE, "currency": currency,
            "lines": basket_lines(purchase), "receipt_id": f"cdnow-{purchase.customer}-{index}",
            "occurred_at": occurred_at(purchase.day)}


def import_record(customer: str, purchases: list[Purchase]) -> dict:
    """The customer as one line of a ``loyalty import`` file: the same member and sales as :func:`replay` sends."""
    return {"external_ref": f"cdnow-{customer}", "name": f"CDNOW {customer}",
            "purchases": [{"store_id": STORE, "receipt_id": f"cdnow-{customer}-{i}",
                           "occurred_at": occurred_at(p.day), "lines": basket_lines(p)}
                          for i, p in enumerate(purchases)]}


def write_import_file(path: Path, *, limit: int | None = None, data: Path = DATA) -> tuple[int, int]:
    """The CDNOW customers (the first ``limit``) as a ``loyalty import`` file; (members, purchases) written."""
    customers = read_purchases(data)
    ids = sorted(customers)[:limit] if limit else sorted(customers)
    with path.open("w") as f:
        for customer in ids:
            f.write(json.dumps(import_record(customer, customers[customer])) + "\n")
    return len(ids), sum(len(customers[c]) for c in ids)


async def replay(base: str, key: str, *, limit: int | None = None, concurrency: int = 32,
                 data: Path = DATA) -> dict[str, float]:
    customers = read_purchases(data)
    ids = sorted(customers)[:limit] if limit else sorted(customers)
    purchases = sum(len(customers[c]) for c in ids)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
        currency = (await client.get("/v1/program")).raise_for_status().json()["currency"]
        store = await client.post("/v1/stores", json={"id": STORE, "name": "CDNOW", "timezone": "UTC"})
        if store.status_code not in (201, 409):
            store.raise_for_status()
        progress = Progress(purchases, "CDNOW purchases", enabled=True)
        started = time.perf_counter()
        queue = iter(ids)

        async def worker() -> None:
            for customer in queue:
                enrolled = await client.post("/v1/members", headers={"Idempotency-Key": f"cdnow-enroll-{customer}"},
                                             json={"name": f"CDNOW {customer}", "external_ref": f"cdnow-{customer}"})
                enrolled.raise_for_status()
                member_id = enrolled.json()["id"]
                for i, purchase in enumerate(customers[customer]):
                    body = checkout_body(member_id, purchase, i, currency)
                    r = await client.post("/v1/checkout/transactions", json=body,
                                          headers={"Idempotency-Key": body["receipt_id"]})
                    if r.status_code not in (201, 409):
                        raise RuntimeError(f"commit failed: {r.status_code} {r.text}")
                    progress.advance()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"members": len(ids), "purchases": purchases, "seconds": elapsed, "rate": purchases / elapsed}


def sweep(as_of: str) -> float:
    """``loyalty sweep --as-of`` on the database ``LOYALTY_DATABASE_URL`` names; its seconds."""
    started = time.perf_counter()
    loyalty = Path(sys.executable).with_name("loyalty")
    subprocess.run([str(loyalty), "sweep", "--as-of", as_of], check=True)
    return time.perf_counter() - started


def segment_report(base: str, key: str) -> dict:
    r = httpx.get(f"{base}/v1/reports/segments", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    r.raise_for_status()
    return r.json()


def print_report(report: dict) -> None:
    members = max(report["members"], 1)
    print(f"segments as of {report['as_of']}: {report['members']} members "
          f"({report['not_segmented']} not yet segmented); thresholds {report['thresholds']}")
    for title, counts in (("quadrant", report["quadrants"]), ("lifecycle", report["lifecycles"])):
        for name, n in counts.items():
            print(f"  {title:<9} {name:<12} {n:>7} {100 * n / members:5.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description="Replay the CDNOW customer base through the API, or write it as a "
                                     "`loyalty import` file (--write-import).")
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--key", help="an admin API key (for the replay and the report)")
    parser.add_argument("--write-import", metavar="FILE", type=Path,
                        help="only write the customers as a `loyalty import` file (store id `cdnow`) and exit")
    parser.add_argument("--limit", type=int, help="only the first N customers")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sweep", action="store_true", help="then run the sweep and print the segment report")
    parser.add_argument("--as-of", default=END_OF_DATA, help="the sweep's --as-of (default: the end of the data)")
    parser.add_argument("--skip-replay", action="store_true", help="only the sweep and the report")
    args = parser.parse_args()
    if args.write_import:
        members, purchases = write_import_file(args.write_import, limit=args.limit)
        print(f"wrote {members} members and {purchases} purchases to {args.write_import}")
        return 0
    if not args.key:
        parser.error("--key is required for the replay and the report")
    if not args.skip_replay:
        result = asyncio.run(replay(args.base, args.key, limit=args.limit, concurrency=args.concurrency))
        print(f"{result['members']} members, {result['purchases']} purchases in {result['seconds']:.1f} s "
              f"({result['rate']:,.0f} purchases/s)")
    if args.sweep:
        print(f"sweep --as-of {args.as_of}: {sweep(args.as_of):.1f} s")
        print_report(segment_report(args.base, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
