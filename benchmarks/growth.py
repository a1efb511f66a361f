"""Growth data for ``make bench``: members and history written straight into PostgreSQL, because enrolling a
million members through the API would take hours and what the growth runs measure is the effect of table
sizes on a commit, not the enrolment.

The rows are shaped as the service writes them (a points account, one earning ledger transaction balanced by
the program's account, the lot it opened, the checkout transaction and its tier spend), so every index the
commit path uses is as large as it would be.
"""

from __future__ import annotations

import statistics
import subprocess
import time

import httpx

from tests.conftest import ADMIN_KEY

STORE = "bench"
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
BATCH = 100_000


def sql(database: str, statement: str) -> str:
    return subprocess.run(["psql", "-q", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v",
                           "ON_ERROR_STOP=1", "-c", statement], check=True, capture_output=True, text=True).stdout


def member_count(database: str) -> int:
    return int(sql(database, "SELECT count(*) FROM members").strip())


def grow_members(database: str, total: int) -> float:
    """Add synthetic members (each with a points balance earned in one ledger transaction) until the program
    has ``total``; returns the seconds it took."""
    started = time.perf_counter()
    have = member_count(database)
    while have < total:
        lo, hi = have, min(total, have + BATCH)
        sql(database, f"""
            BEGIN;
            INSERT INTO members (id, card_number, name, status, referral_code, enrolled_at, updated_at)
              SELECT 'mem_g' || i, '7' || lpad(i::text, 15, '0'), 'Growth ' || i, 'active', 'G' || i, now(), now()
              FROM generate_series({lo}, {hi - 1}) i;
            INSERT INTO ledger_accounts (id, kind, asset, member_id, balance, created_at)
              SELECT 'acc_g' || i, 'points', 'points', 'mem_g' || i, 100, now() FROM generate_series({lo}, {hi - 1}) i;
            INSERT INTO ledger_transactions (id, kind, member_id, created_at)
              SELECT 'ltx_g' || i, 'adjustment', 'mem_g' || i, now() FROM generate_series({lo}, {hi - 1}) i;
            INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount, kind, created_at)
              SELECT 'ltx_g' || i, 'acc_g' || i, 'mem_g' || i, 'points', 100, 'adjust', now()
              FROM generate_series({lo}, {hi - 1}) i
              UNION ALL
              SELECT 'ltx_g' || i, 'program:points_adjusted', NULL, 'points', -100, 'adjust', now()
              FROM generate_series({lo}, {hi - 1}) i;
            INSERT INTO point_lots (member_id, account_id, transaction_id, earned_at, amount, remaining)
              SELECT 'mem_g' || i, 'acc_g' || i, 'ltx_g' || i, now(), 100, 100 FROM generate_series({lo}, {hi - 1}) i;
            COMMIT;""")
        have = hi
    sql(database, "ANALYZE")
    return time.perf_counter() - started


def heavy_history(database: str, member_id: str, count: int, *, every_minutes: int = 20) -> float:
    """Give ``member_id`` ``count`` past committed purchases, one every ``every_minutes`` going back in time,
    each earning 10 points into its own lot (no expiry, so every lot stays open). Returns seconds taken."""
    started = time.perf_counter()
    account = sql(database, f"SELECT id FROM ledger_accounts WHERE member_id = '{member_id}' AND kind = 'points'")
    account = account.strip()
    sql(database, f"""
        BEGIN;
        CREATE TEMP TABLE h AS SELECT i, now() - make_interval(mins => i * {every_minutes}) AS at
          FROM generate_series(1, {count}) i;
        INSERT INTO ledger_transactions (id, kind, member_id, store_id, reference, created_at)
          SELECT 'ltx_h' || i, 'commit', '{member_id}', '{STORE}', 'ctx_h' || i, at FROM h;
        INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount, kind, created_at)
          SELECT 'ltx_h' || i, '{account}', '{member_id}', 'points', 10, 'earn', at FROM h
          UNION ALL SELECT 'ltx_h' || i, 'program:points_issued', NULL, 'points', -10, 'earn', at FROM h;
        INSERT INTO point_lots (member_id, account_id, transaction_id, earned_at, amount, remaining)
          SELECT '{member_id}', '{account}', 'ltx_h' || i, at, 10, 10 FROM h;
        INSERT INTO checkout_transactions (id, store_id, receipt_id, member_id, status, currency, occurred_at,
            created_at, subtotal, discount, net, points_burned, points_earned, qualifying_spend,
            points_balance_after, wallet_balance_after, lines, applied, ledger_transaction_id)
          SELECT 'ctx_h' || i, '{STORE}', 'heavy-' || i, '{member_id}', 'committed', 'USD', at, at, 1000, 0, 1000,
            0, 10, 1000, 0, 0, '[]', '[]', 'ltx_h' || i FROM h;
        INSERT INTO tier_spend (transaction_id, member_id, occurred_at, amount)
          SELECT 'ctx_h' || i, '{member_id}', at, 1000 FROM h;
        UPDATE ledger_accounts SET balance = balance + {count * 10} WHERE id = '{account}';
        COMMIT;
        ANALYZE;""")
    return time.perf_counter() - started


def sequential_commits(base: str, member_id: str, count: int, label: str) -> tuple[float, float]:
    """``count`` commits for one member, one after another (earn, burn, stamp): (mean ms, p50 ms)."""
    lines = [{"line_id": "1", "sku": "COFFEE", "category": "coffee", "quantity": 2, "unit_price": 450},
             {"line_id": "2", "sku": "CAKE", "category": "bakery", "quantity": 1, "unit_price": 380}]
    took = []
    with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as client:
        for i in range(count + 5):
            body = {"member": {"member_id": member_id}, "store_id": STORE, "currency": "USD", "lines": lines,
                    "redeem": {"points": 5}, "receipt_id": f"{label}-{i}-{time.time_ns()}"}
            started = time.perf_counter()
            r = client.post("/v1/checkout/transactions", json=body,
                            headers={"Idempotency-Key": f"{label}-{i}-{time.time_ns()}"})
            if i >= 5:  # the first few warm the caches
                took.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
    return statistics.fmean(took), statistics.median(took)
