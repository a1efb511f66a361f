"""``make bench``: load figures for this machine, as ratios to ceilings measured in the same run.

Set-up in one command: a fresh PostgreSQL database, migrations, the service with 2 worker processes, a seeded
member base; then each workload under ``wrk`` (a separate process, 32 connections, a warm-up first), the
framework ceiling (``GET /healthz`` on the same server) and the database ceiling (``pgbench`` running one
ledger-like transaction on the same PostgreSQL). Results go to ``benchmarks/results/latest.md`` and stdout.
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

from tests.conftest import ADMIN_KEY  # noqa: E402
from tests.server import running_server  # noqa: E402

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
    common = [wrk, "-t", "2", "-c", str(connections), "--latency", "-s", str(script), base]
    if warmup:
        subprocess.run([*common[:1], "-t", "2", "-c", str(connections), "-d", f"{warmup}s", "-s", str(script), base,
                        "--", *args], check=True, capture_output=True)
    out = subprocess.run([*common[:1], "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s",
                          str(script), base, "--", *args], check=True, capture_output=True, text=True)
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


STORE = "bench"


async def seed_members(base: str, count: int, concurrency: int = 32, start: int = 0,
                       points: int = 0) -> list[tuple[str, str]]:
    """Enroll ``count`` members through the API (each given ``points``); return their (id, card number)."""
    cards: list[tuple[str, str]] = []
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    queue = iter(range(start, start + count))
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def worker() -> None:
            for i in queue:
                r = await client.post("/v1/members", json={"name": f"Bench {i}", "external_ref": f"bench-{i}"})
                r.raise_for_status()
                member = r.json()
                if points:
                    (await client.post(f"/v1/members/{member['id']}/points/adjustments",
                                       json={"amount": points, "reason": "benchmark seed"},
                                       headers={"Idempotency-Key": f"seed-{member['id']}"})).raise_for_status()
                cards.append((member["id"], member["card_number"]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return cards


def worker_rss_mb(server_pid_hint: str) -> float:
    """The largest resident set of the server's worker processes, in MB."""
    out = subprocess.run(["pgrep", "-f", server_pid_hint], capture_output=True, text=True).stdout.split()
    sizes = []
    for pid in out:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match:
            sizes.append(int(match.group(1)) / 1024)
    return max(sizes, default=0.0)


def report(figures: list[Figure], ceilings: dict[str, float], notes: list[str]) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"Machine: {machine}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| workload | req/s | p50 ms | p99 ms | errors | × /healthz | × pgbench ledger |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for f in figures:
        lines.append(f"| {f.name} | {f.rps:,.0f} | {f.p50_ms:.1f} | {f.p99_ms:.1f} | {f.errors} | "
                     f"{f.rps / ceilings['healthz']:.2f} | {f.rps / ceilings['pgbench']:.2f} |")
    for f in figures:
        for sample in f.sample_errors or []:
            notes = [*notes, f"{f.name}: {sample[:200]}"]
    lines.append(f"| pgbench ledger transaction (database ceiling) | {ceilings['pgbench']:,.0f} | | | | | 1.00 |")
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="loyalty_bench", help="PostgreSQL database to (re)create")
    parser.add_argument("--members", type=int, default=2000, help="members to seed for the look-up workload")
    parser.add_argument("--duration", type=int, default=15, help="seconds of measured load per workload")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    wrk = ensure_wrk()
    url = fresh_postgres(args.database)
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=ROOT, check=True,
                   env={**os.environ, "LOYALTY_DATABASE_URL": url}, stdout=subprocess.DEVNULL)
    figures: list[Figure] = []
    notes: list[str] = []
    with running_server(url, workers=args.workers) as base, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        httpx.post(f"{base}/v1/stores", json={"id": STORE, "name": "Bench", "timezone": "UTC"},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"}).raise_for_status()
        seeded = asyncio.run(seed_members(base, args.members, points=1_000_000))
        notes.append(f"Seeded {len(seeded)} members with points in {time.perf_counter() - started:.1f} s.")
        cards_file, ids_file, key_file = Path(tmp, "cards.txt"), Path(tmp, "ids.txt"), Path(tmp, "key.txt")
        cards_file.write_text("\n".join(card for _, card in seeded) + "\n")
        ids_file.write_text("\n".join(member_id for member_id, _ in seeded) + "\n")
        key_file.write_text(ADMIN_KEY + "\n")
        run = dict(connections=args.connections, duration=args.duration, warmup=args.warmup)
        healthz = run_wrk(wrk, base, "GET /healthz (framework ceiling)", HERE / "lua/healthz.lua", [], **run)
        figures.append(healthz)
        figures.append(run_wrk(wrk, base, "member look-up by card number", HERE / "lua/lookup.lua",
                               [str(cards_file), str(key_file)], **run))
        for mode in ("quote", "commit"):
            label = {"quote": "quote, 3 lines, points", "commit": "commit: earn and burn points"}[mode]
            figures.append(run_wrk(wrk, base, label, HERE / "lua/checkout.lua",
                                   [str(ids_file), str(key_file), mode, STORE], **run))
        notes.append(f"Largest worker RSS after load: {worker_rss_mb('service.cli serve'):.0f} MB.")
    pgbench = pgbench_ceiling(args.database, connections=args.connections, duration=args.duration)
    text = report(figures, {"healthz": healthz.rps, "pgbench": pgbench}, notes)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
