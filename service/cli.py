"""The ``loyalty`` command: serve, migrate, keys, sweep, import, verify, openapi (more arrive with their domains)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path

from service.settings import Settings

OPENAPI_PATH = Path("openapi/openapi.json")


SERVED_APP = "service.app:serve_app"


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """How each worker of ``loyalty serve`` runs :data:`SERVED_APP` (the tests' forked servers run the same)."""
    return {"factory": True, "log_config": None, "access_log": False, "proxy_headers": True,
            "timeout_keep_alive": settings.keep_alive_seconds}


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings()
    if not args.no_migrate:
        from service import migrate

        migrate.upgrade(settings.database_url)
    uvicorn.run(SERVED_APP, host=args.host, port=args.port, workers=args.workers, **uvicorn_options(settings))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from service import migrate

    migrate.upgrade(Settings().database_url, args.revision)
    print(f"database at {args.revision}")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from service.auth import service as auth_service
    from service.auth.schemas import ApiKeyCreate
    from service.clock import Clock
    from service.db import Database
    from service.errors import ServiceError

    async def run() -> str:
        settings = Settings()
        db = Database(settings.database_url)
        try:
            async with db.transaction() as session:
                body = ApiKeyCreate(role=args.role, store_id=args.store, name=args.name)
                _, secret = await auth_service.create(session, body, Clock(), actor="cli")
                return secret
        finally:
            await db.dispose()

    try:
        print(asyncio.run(run()))
    except ServiceError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def _parse_as_of(value: str):
    from datetime import datetime

    from service.clock import utc

    try:
        return utc(datetime.fromisoformat(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-31T00:00:00Z)") from exc


class _Counter:
    """``label... N`` redrawn on one line of a terminal, for a long job whose total is not known ahead (the
    sweep's batches); nothing in a log file."""

    def __init__(self, label: str) -> None:
        self.label, self.enabled, self.drawn = label, sys.stderr.isatty(), False

    def show(self, done: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{self.label}... {done:,}")
            sys.stderr.flush()
            self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")


# How far ahead of the clock `loyalty sweep --as-of` goes without --allow-future: the till's own allowance.
FUTURE_AS_OF_SKEW = timedelta(minutes=5)
# The expiry sweep leaves a member whose accounts a sale holds for its next batch; once only such members are
# left, it comes back for them this many times, this many seconds apart (a sale holds them for milliseconds).
SWEEP_BUSY_WAITS = 50
SWEEP_BUSY_PAUSE = 0.1


def _cmd_sweep(args: argparse.Namespace) -> int:
    from service import idempotency, ratelimit
    from service.clock import Clock
    from service.db import Database
    from service.personalization import service as personalization
    from service.points import service as points_service
    from service.program import service as program_service
    from service.punchcards import service as punch_service
    from service.tiers import service as tiers_service
    from service.vouchers import service as voucher_service

    async def tier_reviews(db, as_of) -> tuple[int, int]:
        reviewed = changed = 0
        after = ""
        shown = _Counter("sweep: reviewing tiers")
        while True:  # one database transaction per batch of members; the same rule a member read replays
            async def batch(session, after=after):
                return await tiers_service.sweep_batch(session, await program_service.get(session), as_of,
                                                       after=after)
            result, last = await db.run(batch)
            reviewed, changed = reviewed + result.members, changed + result.changes
            shown.show(reviewed)
            if last is None:
                shown.close()
                return reviewed, changed
            after = last

    async def segments(db, as_of, now) -> tuple[int, object]:
        """Thresholds first (medians as of ``as_of``), then every active member's segment, a batch per
        database transaction, with a progress line on stderr."""
        async def thresholds(session):
            return await personalization.sweep_thresholds(session, await program_service.get(session), as_of, now)

        found = await db.run(thresholds)
        done, after = 0, ""
        shown = _Counter("sweep: segmenting members")
        while True:
            result = await db.run(lambda session, after=after: personalization.sweep_batch(
                session, found, as_of, now, after=after))
            done += result.members
            shown.show(done)
            if result.last is None:
                shown.close()
                return done, found
            after = result.last

    async def run() -> tuple[int, int, int, int, int, int]:
        settings = Settings()
        db = Database(settings.database_url)
        now = Clock().now()
        as_of = args.as_of or now
        members = lots = points = 0
        try:
            await _prepare(db, settings)
            shown = _Counter("sweep: expiring points, members")
            waits = 0
            while True:  # one database transaction per batch of members
                result = await db.run(lambda session: points_service.sweep_batch(session, as_of, now))
                members, lots, points = members + result.members, lots + result.lots, points + result.points
                shown.show(members)
                if result.members:
                    continue
                # Nothing left but members whose sales or returns held their accounts: come back for them.
                if not result.busy or waits == SWEEP_BUSY_WAITS:
                    shown.close()
                    busy.append(result.busy)
                    break
                waits += 1
                await asyncio.sleep(SWEEP_BUSY_PAUSE)
            rewards = await db.run(lambda session: punch_service.expire_rewards(session, as_of, now))
            vouchers_done.append(await db.run(lambda session: voucher_service.expire_vouchers(session, as_of, now)))
            tiers_done.extend(await tier_reviews(db, as_of))
            segmented.extend(await segments(db, as_of, now))
            purged = await db.run(lambda session: idempotency.purge_expired(session, now,
                                                                            settings.idempotency_ttl_days))
            failures = await db.run(lambda session: ratelimit.purge(session, now))
            return members, lots, points, rewards, purged, failures
        finally:
            await db.dispose()


    ahead = args.as_of - Clock().now() if args.as_of else timedelta()
    if ahead > FUTURE_AS_OF_SKEW and not args.allow_future:
        print(f"sweep: --as-of {args.as_of:%Y-%m-%d %H:%M} UTC is {ahead.days} days ahead; the sweep would expire "
              "now, for good, what is still valid until then. Pass --allow-future to mean it.", file=sys.stderr)
        return 2
    tiers_done: list[int] = []
    vouchers_done: list[int] = []
    busy: list[int] = []
    segmented: list = []
    members, lots, points, rewards, purged, failures = asyncio.run(run())
    print(f"sweep: expired {points} points from {lots} lots of {members} members")
    if busy[0]:
        print(f"sweep: {busy[0]} members were at a till throughout; the next sweep expires their points")
    print(f"sweep: expired {rewards} punch-card rewards")
    print(f"sweep: expired {vouchers_done[0]} vouchers")
    print(f"sweep: reviewed the tiers of {tiers_done[0]} members, {tiers_done[1]} tier changes")
    print(f"sweep: segmented {segmented[0]} members (frequent from {segmented[1].min_frequency} purchases, high "
          f"spend from {segmented[1].min_monetary} minor units in the trailing 365 days)")
    print(f"sweep: purged {purged} idempotency records older than the retention period")
    print(f"sweep: purged {failures} failed attempts (wrong PINs, unknown codes) older than a day")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    import time

    from service.db import is_sqlite
    from service.errors import ServiceError
    from service.imports import service as imports
    from service.progress import Progress

    path = Path(args.file)
    if not path.is_file():
        print(f"import: {path} is not a file", file=sys.stderr)
        return 2
    # Counted from the lines the import reads (a byte order mark on a first line otherwise blank: the bar stopped
    # one short of its total).
    total = sum(1 for _, line in imports.numbered_lines(path) if line.strip())
    settings = Settings()
    concurrency = args.concurrency or (1 if is_sqlite(settings.database_url) else 8)
    progress = Progress(total, "import: members", unit=" purchases")
    started = time.perf_counter()
    asyncio.run(_prepare_alone(settings))
    try:
        if args.jobs == 1:
            tally = asyncio.run(imports.run_file(
                settings.database_url, path, region=settings.default_region, concurrency=concurrency,
                on_line=lambda tally: progress.advance(rate_of=tally.committed)))
        else:
            tally = imports.run_jobs(
                settings.database_url, path, region=settings.default_region, concurrency=concurrency,
                jobs=args.jobs, on_progress=lambda lines, purchases: progress.show(lines, rate_of=purchases))
    except ServiceError as exc:
        print(f"import: {exc.detail}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    for failure in tally.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    for line in tally.summary(seconds):
        print(line)
    return 1 if tally.failures else 0


async def _prepare(db, settings: Settings) -> None:
    """What every served process ensures at start (the default program, the program's ledger accounts, the
    bootstrap admin key), for a command run on a database no server has started on yet."""
    from service.app import prepare_database
    from service.clock import Clock

    await prepare_database(db, settings, Clock())


async def _prepare_alone(settings: Settings) -> None:
    """:func:`_prepare` with a connection of its own, for commands whose work opens its own."""
    from service.db import Database

    db = Database(settings.database_url)
    try:
        await _prepare(db, settings)
    finally:
        await db.dispose()


def _cmd_demo(args: argparse.Namespace) -> int:
    from service import demo
    from service.clock import Clock
    from service.db import Database

    async def run() -> demo.Loaded:
        settings = Settings()
        db = Database(settings.database_url)
        try:
            await _prepare(db, settings)
            return await demo.load(db, Clock(), region=settings.default_region)
        finally:
            await db.dispose()

    loaded = asyncio.run(run())
    if loaded.already:
        print(f"demo: already loaded (store {demo.STORES[0][0]} exists); nothing changed")
        return 0
    print(f"demo: stores {', '.join(s[0] for s in demo.STORES)}, a coffee card, two voucher campaigns, "
          f"{loaded.members} members with {loaded.purchases} purchases")
    for purpose, secret in loaded.keys.items():
        print(f"demo: {purpose}: {secret}  (shown once)")
    for name, card in loaded.cards:
        print(f"demo: member {name}, card {card}")
    name, card = loaded.cards[0]
    print("demo: try it with the Berlin till's key:\n"
          f"  curl -H 'Authorization: Bearer {loaded.keys['pos key, Berlin']}' "
          f"'http://127.0.0.1:8000/v1/members?card_number={card}'\n"
          "demo: run `loyalty sweep` to segment the members")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from service import verification
    from service.db import Database

    async def run():
        settings = Settings()
        db = Database(settings.database_url)
        try:
            return await db.run(verification.verify, write=False)
        finally:
            await db.dispose()

    report = asyncio.run(run())
    print(f"verify: {report.transactions} ledger transactions, {report.entries} entries, {report.accounts} accounts")
    if report.ok:
        print("verify: every invariant holds")
        return 0
    for problem in report.problems:
        print(f"FAILED: {problem}")
    print(f"verify: {len(report.problems)} problem(s) found", file=sys.stderr)
    return 1


def _cmd_deliver(args: argparse.Namespace) -> int:
    from service.clock import Clock
    from service.db import Database
    from service.events import delivery

    async def run() -> int:
        settings = Settings()
        db = Database(settings.database_url)
        try:
            if not args.once:
                await delivery.run_worker(db, Clock(), interval=settings.webhook_poll_seconds)
                return 0
            total = 0
            async with delivery.http_client() as http:
                while attempted := await delivery.deliver_once(db, Clock(), http):
                    total += attempted
            return total
        finally:
            await db.dispose()

    try:
        attempted = asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    if args.once:
        print(f"deliver: {attempted} webhook deliveries attempted")
    return 0


def openapi_document() -> dict:
    from service.app import create_app

    return create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"), log=False).openapi()


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def _cmd_openapi(args: argparse.Namespace) -> int:
    path = Path(args.output)
    rendered = render_openapi()
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != rendered:
            print(f"{path} differs from the app's OpenAPI document: run `loyalty openapi`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loyalty", description="Loyalty service. Settings come from LOYALTY_* environment variables "
        "(LOYALTY_DATABASE_URL, LOYALTY_BOOTSTRAP_ADMIN_KEY, LOYALTY_CURRENCY, LOYALTY_LOG_LEVEL).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="apply pending migrations, then serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    serve.set_defaults(func=_cmd_serve)

    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    mig.set_defaults(func=_cmd_migrate)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create an API key and print it (shown once)")
    create.add_argument("--role", required=True, choices=["admin", "pos", "app"])
    create.add_argument("--store", help="the store a pos key serves (required for --role pos)")
    create.add_argument("--name", help="a label for the key")
    create.set_defaults(func=_cmd_keys_create)

    sweep = sub.add_parser(
        "sweep", help="expire points and rewards, run due tier reviews, segment members (idempotent)",
        description="The periodic work, in order, each step a batch of members per database transaction:\n"
        "  1. expire the points of lots past their end (their expiry entries go to the ledger);\n"
        "  2. expire punch-card rewards and vouchers past their end;\n"
        "  3. run tier reviews that have fallen due;\n"
        "  4. segment every active member as of --as-of (the frequency and spend thresholds first);\n"
        "  5. purge idempotency records past their retention and failed attempts older than a day.\n\n"
        "Running it again with the same --as-of changes nothing, and a sweep that was stopped is finished by\n"
        "running it again; two at once expire each lot once. Run it daily (cron or a scheduler). Exit status 0\n"
        "when done, 2 when it could not run (the database unreachable, an --as-of refused).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("--as-of", type=_parse_as_of, default=None,
                       help="act as of this time (ISO 8601; default: now). Later than now is refused without "
                       "--allow-future: it would expire now, for good, points and rewards still valid until then")
    sweep.add_argument("--allow-future", action="store_true",
                       help="accept an --as-of later than now (tests and rehearsals on a copy of the data)")
    sweep.set_defaults(func=_cmd_sweep)

    deliver = sub.add_parser("deliver", help="deliver webhooks (for deployments that run LOYALTY_WEBHOOK_WORKER=false)")
    deliver.add_argument("--once", action="store_true",
                         help="deliver what is due now, then exit (default: keep delivering until interrupted)")
    deliver.set_defaults(func=_cmd_deliver)

    imp = sub.add_parser(
        "import", help="import members and their purchase history from a JSON Lines file (safe to run again)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import members and their purchase history, one member per line of a JSON Lines file:\n\n"
        '  {"external_ref": "crm-1001", "name": "Jane Doe", "email": "jane@example.com",\n'
        '   "purchases": [{"store_id": "berlin-01", "receipt_id": "R-0001", "occurred_at": "2024-01-02T12:00:00Z",\n'
        '                  "lines": [{"line_id": "1", "sku": "CD", "category": "music", "quantity": 2,\n'
        '                             "unit_price": 1199}]}]}\n\n'
        "Member fields are those of POST /v1/members, external_ref required. Each purchase is committed as a\n"
        "backdated sale (points, stamps, tiers and segments as at a till), oldest first; stores must exist.\n"
        "Each line goes in whole or not at all: a line that fails is reported with its number and nothing of\n"
        "it is written (members go in several to a transaction; a batch with a failing line goes in again\n"
        "one member at a time). Running the file again finishes an interrupted import: members are found by\n"
        "external_ref, receipts they already have are skipped. Exit status 1 when any line failed.")
    imp.add_argument("file", help="the JSON Lines file")
    imp.add_argument("--concurrency", type=int, choices=range(1, 65), metavar="N",
                     help="members imported at once by each process (default: 8 on PostgreSQL, 1 on SQLite)")
    imp.add_argument("--jobs", type=int, default=1, choices=range(1, 33), metavar="J",
                     help="processes, each taking every J-th line (default 1; one process keeps about one core "
                     "busy, so give more cores more jobs)")
    imp.set_defaults(func=_cmd_import)

    demo_cmd = sub.add_parser(
        "demo", help="load a demo program: two stores, a coffee card, voucher campaigns, twelve members with a "
        "year of purchases, keys for the tills and the app (once; running it again changes nothing)")
    demo_cmd.set_defaults(func=_cmd_demo)

    verify = sub.add_parser(
        "verify", help="check the ledger's invariants; exit 1 with a report if one fails",
        description="Read the whole ledger and check, printing a FAILED line for each problem found (at most 50\n"
        "of each kind):\n"
        "  - every ledger transaction balances in each asset;\n"
        "  - every account's balance is the sum of its entries; no stored value (wallet, gift card) is negative;\n"
        "  - every member's points balance is what their open lots hold;\n"
        "  - every lot's remaining points are its amount less what was drawn from it;\n"
        "  - every entry and lot is filed under its account's member, and in its account's asset;\n"
        "  - no entry is without its transaction;\n"
        "  - every sale's points earned and burned are what its ledger transaction moved;\n"
        "  - every sale's punch-card rewards cost the stamps its ledger transaction turned into rewards.\n\n"
        "It only reads. Exit status 0 when every invariant holds, 1 when one fails, 2 when it could not run.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.set_defaults(func=_cmd_verify)

    api = sub.add_parser("openapi", help="write the OpenAPI document (or --check that it is current)")
    api.add_argument("--check", action="store_true", help="exit 1 if the file differs from the app's document")
    api.add_argument("--output", default=str(OPENAPI_PATH))
    api.set_defaults(func=_cmd_openapi)
    return parser


def _cannot_run(error: Exception) -> str | None:
    """What to tell an operator whose command could not run (no traceback): the database unreachable or not
    migrated, a file that cannot be read, an unknown migration; None for an error that is a bug."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, DBAPIError):
        reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error.orig).__name__
        return (f"the database refused: {reason} (check LOYALTY_DATABASE_URL, and run `loyalty migrate` on a new "
                "database)")
    if isinstance(error, OSError):
        return f"cannot reach the database or a file: {error} (check LOYALTY_DATABASE_URL)"
    if isinstance(error, CommandError):
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        message = _cannot_run(exc)
        if message is None:
            raise
        print(f"loyalty {args.command}: {message}", file=sys.stderr)
        if args.command == "import":
            print("loyalty import: what was committed stays; run the file again to finish", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
