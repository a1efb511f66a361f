"""Import members and their purchase history (``loyalty import``), for a retailer moving from another system.

Each line of the file is one member and goes in whole or not at all: the member is enrolled (or found again by
``external_ref``), then each purchase is committed through the checkout
(:func:`service.checkout.service.commit`), backdated to its ``occurred_at``, oldest first. So an imported sale
earns points, stamps, tier progress and segment figures exactly as the same sale at a till would, and goes
through the one ledger. Members go in several to a transaction (``rules.MEMBERS_PER_TRANSACTION``); a line that
fails (bad JSON, an unknown store, a receipt another member has) rolls its batch back, the batch's members go in
again one transaction each, and the failing line is reported; the others go on.

Running the same file again is safe: a member is found by ``external_ref`` and a purchase whose receipt the
member already has is skipped, so an interrupted import is finished by running it again. Events
(``member.enrolled``, ``transaction.committed``) are written as the API writes them.
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.rules import Principal
from service.checkout import service as checkout
from service.checkout.schemas import CommitRequest
from service.clock import Clock
from service.db import Database
from service.errors import ServiceError, violation_error
from service.imports import repository, rules
from service.imports.schemas import ImportMember
from service.members import service as members_service
from service.members.errors import MemberErased, MemberExists
from service.program import service as program_service

# Imports act as an admin: backdated sales at any store.
IMPORTER = Principal(key_id="cli:import", role="admin", store_id=None)


async def import_member(session: AsyncSession, record: ImportMember, clock: Clock, *, region: str,
                        currency: str) -> rules.Outcome:
    """Enroll or find the member, then commit the purchases the member does not have yet, oldest first."""
    found = await repository.member_by_external_ref(session, record.external_ref)
    if found is not None and found.status != "active":
        raise MemberErased(f"The member with external_ref {record.external_ref!r} was erased: they are not "
                           "imported again (take the line out of the file).")
    member_id = found.id if found is not None else (
        await members_service.enroll(session, record, clock, region=region)).id
    purchases = rules.in_order(record.purchases)
    committed = set() if found is None else await repository.committed_receipts(
        session, member_id, [(p.store_id, p.receipt_id) for p in purchases])
    todo = rules.pending(purchases, committed)
    for purchase in todo:
        body = CommitRequest.model_validate({
            "member": {"member_id": member_id}, "store_id": purchase.store_id,
            "currency": purchase.currency or currency, "lines": purchase.lines, "receipt_id": purchase.receipt_id,
            "occurred_at": purchase.occurred_at})
        await checkout.commit(session, body, IMPORTER, clock, region=region)
    return rules.Outcome(enrolled=found is None, committed=len(todo), skipped=len(purchases) - len(todo))


async def imported_member_id(session: AsyncSession, external_ref: str) -> str | None:
    """The id of the member an import line with this ``external_ref`` enrolled, or None."""
    found = await repository.member_by_external_ref(session, external_ref)
    return found.id if found is not None else None


def _external_ref(text: str) -> str | None:
    """The line's ``external_ref`` when it can be read, to name the line in a report."""
    try:
        ref = json.loads(text).get("external_ref")
    except (ValueError, AttributeError):
        return None
    return ref if isinstance(ref, str) else None


async def run(db: Database, lines: Iterable[tuple[int, str | bytes]], clock: Clock, *, region: str,
              concurrency: int, on_line: Callable[[rules.Tally], None] = lambda tally: None) -> rules.Tally:
    """Import numbered lines (blank ones are skipped), ``concurrency`` members at a time; ``on_line`` is told
    after each line. A line read as bytes must be UTF-8: one that is not fails with its byte and column, and
    nothing of it is written (a name read with its letters replaced could not be mended by running the file
    again: the member would be found by ``external_ref`` and kept). A database error that stands for no client
    error stops the import (it is raised)."""
    tally = rules.Tally()
    currency = (await db.run(program_service.get, write=False)).currency
    queue = ((number, text) for number, text in lines if text.strip())
    analyze_at = rules.FIRST_ANALYZE

    async def one(number: int, record: ImportMember) -> None:
        for attempt in (1, 2):
            try:
                tally.add(await db.run(lambda session: import_member(session, record, clock, region=region,
                                                                     currency=currency)))
                return
            except MemberExists as exc:
                # Another line of the file enrolled the same external_ref at the same moment: run this one again,
                # and it finds that member.
                if attempt == 2 or "external_ref" not in exc.extra.get("fields", ()):
                    tally.failures.append(rules.Failure(number, record.external_ref, exc.detail))
                    return
            except Exception as exc:
                detail = _refusal(exc)
                if detail is None:
                    raise
                tally.failures.append(rules.Failure(number, record.external_ref, detail))
                return

    async def together(records: list[tuple[int, ImportMember]]) -> bool:
        """The members in one transaction; False, with nothing written, if any of them is refused (each then
        goes in on its own, and only the refused line fails)."""
        async def import_all(session: AsyncSession) -> list[rules.Outcome]:
            return [await import_member(session, record, clock, region=region, currency=currency)
                    for _, record in records]
        try:
            outcomes = await db.run(import_all)
        except Exception as exc:
            if _refusal(exc) is None:
                raise
            return False
        for outcome in outcomes:
            tally.add(outcome)
        return True

    async def worker() -> None:
        nonlocal analyze_at
        while batch := list(itertools.islice(queue, rules.MEMBERS_PER_TRANSACTION)):
            records = []
            for number, text in batch:
                try:
                    text = text if isinstance(text, str) else text.decode("utf-8")
                    records.append((number, ImportMember.model_validate_json(text)))
                except ValidationError as exc:
                    tally.failures.append(rules.Failure(number, _external_ref(text), rules.describe(exc)))
                except UnicodeDecodeError as exc:
                    tally.failures.append(rules.Failure(number, None, rules.not_utf8(exc)))
            if len(records) < 2 or not await together(records):
                for number, record in records:
                    await one(number, record)
            for _ in batch:
                on_line(tally)
            if tally.members >= analyze_at:  # once, should a batch have crossed several doublings
                while tally.members >= analyze_at:
                    analyze_at *= 2
                await db.run(repository.refresh_statistics)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.failures.sort(key=lambda failure: failure.line)
    return tally


def _refusal(error: Exception) -> str | None:
    """What is wrong with a line whose import failed with ``error``; None for an error that is no line's fault
    (it stops the import)."""
    if isinstance(error, ServiceError):  # MemberExists included: in a batch, the lines go in again one by one
        return error.detail
    if isinstance(error, ValidationError):  # a purchase that is no valid sale (line ids repeated, too large)
        return rules.describe(error)
    if isinstance(error, DBAPIError):
        known = violation_error(error)
        return None if known is None else known.detail
    return None


def numbered_lines(path: Path, *, share: int = 0, shares: int = 1) -> Iterator[tuple[int, bytes]]:
    """The file's lines as bytes, numbered from 1; with ``shares`` > 1 only every ``shares``-th, from line
    ``share + 1``. Read one at a time, as the members are taken. The byte order mark that Excel and Windows tools
    put before UTF-8 is dropped; :func:`run` decodes each line on its own, so one line in another encoding fails
    alone."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if (number - 1) % shares == share:
                yield number, line


async def run_file(url: str, path: Path, *, region: str, concurrency: int, share: int = 0, shares: int = 1,
                   on_line: Callable[[rules.Tally], None] = lambda tally: None) -> rules.Tally:
    """:func:`run` over the file's lines (its ``share`` of them), on a database of its own."""
    db = Database(url)
    try:
        return await run(db, numbered_lines(path, share=share, shares=shares), Clock(), region=region,
                         concurrency=concurrency, on_line=on_line)
    finally:
        await db.dispose()


_counters = None  # in a job process: its slots in the members and purchases done, shared with the parent


def _share_counters(counters) -> None:
    global _counters
    _counters = counters


def _import_share(url: str, path: Path, share: int, shares: int, region: str, concurrency: int) -> rules.Tally:
    """One job process: its share of the lines, telling the parent how far it is through the shared counters."""
    def told(tally: rules.Tally) -> None:
        _counters[2 * share], _counters[2 * share + 1] = tally.members + len(tally.failures), tally.committed

    return asyncio.run(run_file(url, path, region=region, concurrency=concurrency, share=share, shares=shares,
                                on_line=told))


def run_jobs(url: str, path: Path, *, region: str, concurrency: int, jobs: int,
             on_progress: Callable[[int, int], None] = lambda lines, purchases: None) -> rules.Tally:
    """The import in ``jobs`` processes, each taking every ``jobs``-th line with ``concurrency`` members at a
    time: one process runs the checkout's Python on one core, so more cores need more processes. Two lines for one
    member in different processes are reconciled as within one (the second finds the member).
    ``on_progress(lines done, purchases committed)`` is told about twice a second."""
    counters = multiprocessing.get_context("spawn").Array("q", 2 * jobs, lock=False)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_share_counters, initargs=(counters,)) as pool:
        futures = [pool.submit(_import_share, url, path, share, jobs, region, concurrency) for share in range(jobs)]
        while wait(futures, timeout=0.5).not_done:
            on_progress(sum(counters[0::2]), sum(counters[1::2]))
        tallies = [future.result() for future in futures]
    on_progress(sum(counters[0::2]), sum(counters[1::2]))
    return rules.Tally.merged(tallies)
