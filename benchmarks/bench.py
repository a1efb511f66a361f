"""``make bench``: load figures for this machine, as ratios to ceilings measured in the same run.

Set-up in one command: a fresh PostgreSQL database, migrations, the service with 2 worker processes, the CDNOW
member base replayed by ``loyalty import`` (23,570 members, their purchases as backdated commits through the
checkout; its time and rate are reported; ``--cdnow-via api`` replays it through the API instead), 2,000 more
members given points and wallet money for the workloads; then each workload under ``wrk`` (a separate process,
32 connections, a warm-up first), the framework ceiling (``GET /healthz`` on the same server) and the database
ceiling (``pgbench`` running one ledger-like transaction on the same PostgreSQL). Results go to
``benchmarks/results/latest.md`` and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import cdnow, growth  # noqa: E402
from benchmarks.growth import HEADERS, STORE  # noqa: E402
from service.imports.rules import MEMBERS_PER_TRANSACTION  # noqa: E402
from tests.conftest import ADMIN_KEY  # noqa: E402
from tests.server import served_command  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass
class Figure:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    sample_errors: list[str] | None = None


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("installing wrk (Debian package)...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk is not available")


def psql(admin_url: str, sql: str, database: str = "postgres") -> None:
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def fresh_postgres(name: str) -> str:
    psql("", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql("", f"CREATE DATABASE {name}")
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(name: str, output: str) -> Figure:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Figure(name, rps, _ms(*p50.groups()), _ms(*p99.groups()), errors)


def run_wrk(wrk: str, base: str, name: str, script: Path, args: list[str], *, connections: int, duration: int,
            warmup: int) -> Figure:
    # A 10 s timeout, so that slow answers are measured rather than counted as errors at wrk's default 2 s.
    common = [wrk, "-t", "2", "-c", str(connections), "--timeout", "10s", "-s", str(script), base]
    if warmup:
        subprocess.run([*common, "-d", f"{warmup}s", "--", *args], check=True, capture_output=True)
    out = subprocess.run([*common, "-d", f"{duration}s", "--latency", "--", *args], check=True, capture_output=True,
                         text=True)
    figure = parse_wrk(name, out.stdout)
    figure.sample_errors = sorted(set(out.stderr.splitlines()))[:3]
    return figure


def pgbench_ceiling(database: str, *, connections: int, duration: int) -> float:
    setup = """
        DROP TABLE IF EXISTS bench_entries; DROP TABLE IF EXISTS bench_accounts;
        CREATE TABLE bench_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
        INSERT INTO bench_accounts (id) SELECT g FROM generate_series(0, 100000) g;
        CREATE TABLE bench_entries (id bigserial PRIMARY KEY, account_id bigint NOT NULL, amount bigint NOT NULL,
                                    created_at timestamptz NOT NULL DEFAULT now());
    """
    psql("", setup, database)
    out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-c", str(connections), "-j", "2",
                          "-T", str(duration), "-f", str(HERE / "pgbench_ledger.sql"), database],
                         check=True, capture_output=True, text=True).stdout
    psql("", "DROP TABLE bench_entries; DROP TABLE bench_accounts;", database)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))




async def seed_members(base: str, count: int, concurrency: int = 32, start: int = 0, points: int = 0,
                       wallet: int = 0) -> list[tuple[str, str]]:
    """Enroll ``count`` members through the API (each given ``points`` and ``wallet`` money); return their
    (id, card number)."""
    cards: list[tuple[str, str]] = []
    queue = iter(range(start, start + count))
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) as client:

        async def worker() -> None:
            for i in queue:
                r = await client.post("/v1/members", json={"name": f"Bench {i}", "external_ref": f"bench-{i}"})
                r.raise_for_status()
                member = r.json()
                if points:
                    (await client.post(f"/v1/members/{member['id']}/points/adjustments",
                                       json={"amount": points, "reason": "benchmark seed"},
                                       headers={"Idempotency-Key": f"seed-{member['id']}"})).raise_for_status()
                if wallet:
                    (await client.post(f"/v1/members/{member['id']}/wallet/top-ups",
                                       json={"amount": wallet, "payment_ref": f"seed-{i}"},
                                       headers={"Idempotency-Key": f"top-up-{member['id']}"})).raise_for_status()
                cards.append((member["id"], member["card_number"]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return cards


def seed_program(base: str) -> None:
    """The store and a coffee punch card, so that the commit workload stamps a card."""
    with httpx.Client(base_url=base, headers=HEADERS, timeout=30) as client:
        client.post("/v1/stores", json={"id": STORE, "name": "Bench", "timezone": "UTC"}).raise_for_status()
        client.post("/v1/punch-card-programs", json={
            "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 10,
            "reward": {"categories": ["coffee"], "max_value": 500}, "reward_valid_days": 90}).raise_for_status()


def worker_rss_mb(base: str) -> float:
    """The largest resident set of the worker processes of the ``loyalty serve`` listening at ``base``, in MB:
    uvicorn's spawned workers, children of the command's process (with one worker, that process serves itself).
    Until 2026-12-07 this matched the command's own process only, uvicorn's supervisor (38 MB), not a worker."""
    port = base.rsplit(":", 1)[1]
    [command] = subprocess.run(["pgrep", "-f", f"service.cli serve --no-migrate --port {port} "],
                               capture_output=True, text=True).stdout.split()
    children = subprocess.run(["pgrep", "-P", command], capture_output=True, text=True).stdout.split()
    workers = [pid for pid in children if "spawn_main" in _read(f"/proc/{pid}/cmdline")] or [command]
    sizes = [int(match.group(1)) / 1024 for pid in workers
             if (match := re.search(r"VmRSS:\s+(\d+) kB", _read(f"/proc/{pid}/status")))]
    return max(sizes, default=0.0)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def report(title: str, figures: list[Figure], ceilings: dict[str, float], notes: list[str]) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    has_pg = "pgbench" in ceilings
    lines = [f"### {title}", "", f"Machine: {machine}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| workload | req/s | p50 ms | p99 ms | errors | × /healthz |" + (" × pgbench ledger |" if has_pg else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if has_pg else "")]
    for f in figures:
        row = (f"| {f.name} | {f.rps:,.0f} | {f.p50_ms:.1f} | {f.p99_ms:.1f} | {f.errors} | "
               f"{f.rps / ceilings['healthz']:.2f} |")
        lines.append(row + (f" {f.rps / ceilings['pgbench']:.2f} |" if has_pg else ""))
    for f in figures:
        for sample in f.sample_errors or []:
            notes = [*notes, f"{f.name}: {sample[:200]}"]
    if has_pg:
        lines.append(f"| pgbench ledger transaction (database ceiling) | {ceilings['pgbench']:,.0f} | | | | | 1.00 |")
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def load_figures(wrk: str, base: str, tmp: str, seeded: list[tuple[str, str, str]], run: dict) -> list[Figure]:
    """The framework ceiling and the four workloads against one running server."""
    cards_file, ids_file, key_file = Path(tmp, "cards.txt"), Path(tmp, "ids.txt"), Path(tmp, "key.txt")
    cards_file.write_text("\n".join(card for _, card, _ in seeded) + "\n")
    ids_file.write_text("\n".join(f"{member_id} {voucher}" for member_id, _, voucher in seeded) + "\n")
    key_file.write_text(ADMIN_KEY + "\n")
    figures = [run_wrk(wrk, base, "GET /healthz (framework ceiling)", HERE / "lua/healthz.lua", [], **run),
               run_wrk(wrk, base, "member look-up by card number", HERE / "lua/lookup.lua",
                       [str(cards_file), str(key_file)], **run)]
    labels = {"quote": "quote, 3 lines, a voucher and points", "commit": "commit: earn and burn points, stamp a card",
              "wallet": "commit paid from the wallet"}
    for mode, label in labels.items():
        figures.append(run_wrk(wrk, base, label, HERE / "lua/checkout.lua",
                               [str(ids_file), str(key_file), mode, STORE], **run))
    return figures


def bench_postgres(args: argparse.Namespace, wrk: str) -> str:
    url = fresh_postgres(args.database)
    migrate(url)
    notes: list[str] = []
    growth_rows: list[str] = []
    with served_command(url, workers=args.workers) as base, tempfile.TemporaryDirectory() as tmp:
        if args.cdnow:
            replay_cdnow(base, url, args.cdnow_limit, args.cdnow_via, notes)
        seeded = seed(base, args.members, notes)
        settle(args.database)
        run = dict(connections=args.connections, duration=args.duration, warmup=args.warmup)
        figures = load_figures(wrk, base, tmp, seeded, run)
        notes.append(f"Largest worker RSS after load: {worker_rss_mb(base):.0f} MB.")
        if args.growth:
            growth_rows = grow(args, wrk, base, tmp, seeded, run)
    pgbench = pgbench_ceiling(args.database, connections=args.connections, duration=args.duration)
    text = report(f"PostgreSQL, {args.workers} workers", figures,
                  {"healthz": figures[0].rps, "pgbench": pgbench}, notes)
    return text + ("\n" + "\n".join(growth_rows) + "\n" if growth_rows else "")


def grow(args: argparse.Namespace, wrk: str, base: str, tmp: str, seeded: list[tuple[str, str, str]],
         run: dict) -> list[str]:
    """The commit workload at 1,000 / 100,000 / 1,000,000 members, then one member with a long history."""
    rows = ["### Growth (PostgreSQL): the commit workload as the member base and one member's history grow", "",
            "| members | seeding s | commit req/s | p50 ms | p99 ms |", "| ---: | ---: | ---: | ---: | ---: |"]
    ids_file, key_file = Path(tmp, "ids.txt"), Path(tmp, "key.txt")
    short = {**run, "duration": max(5, args.duration // 2)}
    for total in args.sizes:
        print(f"growth: {total:,} members...", flush=True)
        took = growth.grow_members(args.database, total)
        f = run_wrk(wrk, base, "commit", HERE / "lua/checkout.lua", [str(ids_file), str(key_file), "commit", STORE],
                    **short)
        rows.append(f"| {growth.member_count(args.database):,} | {took:.0f} | {f.rps:,.0f} | {f.p50_ms:.1f} | "
                    f"{f.p99_ms:.1f} |")
    heavy, light = seeded[0][0], seeded[1][0]
    print(f"growth: {args.history:,} past transactions for one member...", flush=True)
    took = growth.heavy_history(args.database, heavy, args.history)
    rows += ["", f"One member given {args.history:,} past purchases ({took:.0f} s to write), 200 commits one after "
                 "another for that member and for a member with a short history:", "",
             "| member | mean ms | p50 ms |", "| --- | ---: | ---: |"]
    for label, member_id in (("short history", light), (f"{args.history:,} past purchases", heavy)):
        mean, p50 = growth.sequential_commits(base, member_id, 200, label.split()[0])
        rows.append(f"| {label} | {mean:.1f} | {p50:.1f} |")
    return rows


def bench_sqlite(args: argparse.Namespace, wrk: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        migrate(url)
        notes: list[str] = []
        with served_command(url, workers=1) as base:
            seeded = seed(base, min(args.members, 1000), notes)
            run = dict(connections=args.connections, duration=args.duration, warmup=args.warmup)
            figures = load_figures(wrk, base, tmp, seeded, run)
            notes.append(f"Worker RSS after load: {worker_rss_mb(base):.0f} MB.")
    return report("SQLite (the embedded default), 1 worker", figures, {"healthz": figures[0].rps}, notes)


def replay_cdnow(base: str, url: str, limit: int | None, via: str, notes: list[str]) -> None:
    """The CDNOW member base and its history as backdated commits: by ``loyalty import`` (the command a retailer
    moving from another system runs beside the server, one job process per core) or through the API
    (``benchmarks/cdnow.py``, 32 connections)."""
    if not cdnow.DATA.exists():
        sys.exit(f"{cdnow.DATA} is missing: put the shared data beside the project, or pass --no-cdnow")
    if via == "api":
        result = asyncio.run(cdnow.replay(base, ADMIN_KEY, limit=limit))
        notes.append(f"CDNOW import through the API: {result['members']:,} members and {result['purchases']:,} "
                     f"purchases, each a backdated commit at 32 connections, in {result['seconds']:,.0f} s = "
                     f"{result['rate']:,.0f} purchases/s.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "cdnow.jsonl")
        members, purchases = cdnow.write_import_file(path, limit=limit)
        store = httpx.post(f"{base}/v1/stores", headers=HEADERS, json={"id": cdnow.STORE, "name": "CDNOW",
                                                                      "timezone": "UTC"})
        if store.status_code not in (201, 409):
            store.raise_for_status()
        print(f"CDNOW: loyalty import of {members:,} members, {purchases:,} purchases...", flush=True)
        started = time.perf_counter()
        jobs = os.cpu_count() or 1
        subprocess.run([sys.executable, "-m", "service.cli", "import", "--jobs", str(jobs), str(path)], cwd=ROOT,
                       check=True, env={**os.environ, "LOYALTY_DATABASE_URL": url})
        seconds = time.perf_counter() - started
    notes.append(f"CDNOW import (`loyalty import --jobs {jobs}`, 8 members at a time per process, "
                 f"{MEMBERS_PER_TRANSACTION} to a transaction): {members:,} members and {purchases:,} purchases, "
                 f"each a backdated commit through the checkout, in {seconds:,.0f} s = "
                 f"{purchases / seconds:,.0f} purchases/s.")


def settle(database: str) -> None:
    """After a bulk import and the seeding, what an operator would run before opening the tills: VACUUM
    (ANALYZE) and a CHECKPOINT, so that the workloads measured next do not share the cores with autovacuum and the
    checkpoint catching up on the imported data (in one run the commit workload measured half its rate right after
    the import), and run on plans made for the tables as they are (a plan prepared while a table was nearly empty
    scans it whole; ANALYZE has every connection plan again)."""
    psql("", "VACUUM (ANALYZE)", database=database)
    psql("", "CHECKPOINT", database=database)


def migrate(url: str) -> None:
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=ROOT, check=True,
                   env={**os.environ, "LOYALTY_DATABASE_URL": url}, stdout=subprocess.DEVNULL)


async def issue_vouchers(base: str, member_ids: list[str], concurrency: int = 32) -> dict[str, str]:
    """A 10 % off bakery voucher for each member (a targeted issue through the API): ``{member id: code}``. The
    quote workload names it; a quote does not use it up."""
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) as client:
        r = await client.post("/v1/voucher-campaigns", json={
            "name": "Bench bakery 10 %", "kind": "percent_off", "value": 10, "categories": ["bakery"],
            "stackable": True})
        r.raise_for_status()
        campaign, codes, queue = r.json()["id"], {}, iter(member_ids)

        async def worker() -> None:
            for member_id in queue:
                r = await client.post(f"/v1/voucher-campaigns/{campaign}/vouchers", json={"member_id": member_id},
                                      headers={"Idempotency-Key": f"voucher-{member_id}"})
                r.raise_for_status()
                codes[member_id] = r.json()[0]["code"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return codes


def seed(base: str, members: int, notes: list[str]) -> list[tuple[str, str, str]]:
    """(member id, card number, voucher code) of ``members`` new members."""
    started = time.perf_counter()
    seed_program(base)
    enrolled = asyncio.run(seed_members(base, members, points=1_000_000, wallet=10_000_000))
    vouchers = asyncio.run(issue_vouchers(base, [member_id for member_id, _ in enrolled]))
    seeded = [(member_id, card, vouchers[member_id]) for member_id, card in enrolled]
    notes.append(f"Seeded {len(seeded):,} members with points, wallet money and a voucher through the API in "
                 f"{time.perf_counter() - started:.1f} s.")
    return seeded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--database", default="loyalty_bench", help="PostgreSQL database to (re)create")
    parser.add_argument("--members", type=int, default=2000,
                        help="members to seed with points and wallet money for the workloads")
    parser.add_argument("--no-cdnow", dest="cdnow", action="store_false",
                        help="skip the CDNOW replay (PostgreSQL) that the workloads otherwise run beside")
    parser.add_argument("--cdnow-limit", type=int, help="replay only the first N CDNOW customers")
    parser.add_argument("--cdnow-via", choices=["import", "api"], default="import",
                        help="replay CDNOW with `loyalty import` (default) or through the API at 32 connections")
    parser.add_argument("--duration", type=int, default=15, help="seconds of measured load per workload")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--growth", action="store_true",
                        help="also run the commit workload at 1k/100k/1M members and with one long history")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1_000, 100_000, 1_000_000],
                        help="member counts of the growth runs (comma-separated)")
    parser.add_argument("--history", type=int, default=100_000, help="past purchases of the long-history member")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args()

    wrk = ensure_wrk()
    parts = []
    if args.engine in ("postgres", "both"):
        parts.append(bench_postgres(args, wrk))
    if args.engine in ("sqlite", "both"):
        parts.append(bench_sqlite(args, wrk))
    text = "\n".join(parts)
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
