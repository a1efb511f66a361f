"""The program's configuration (one versioned document) and the retailer's stores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from service.audit import record as audit
from service.clock import Clock
from service.errors import ServiceError
from service.ids import new_id
from service.ledger import service as ledger
from service.program import repository, rules
from service.program.errors import CurrencyInUse, ProgramVersionConflict, StoreExists, StoreNotFound
from service.program.models import ProgramRow, Store
from service.program.schemas import ProgramConfig, ProgramPublic, ProgramUpdate, StoreCreate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A store as the checkout and greetings read it (an immutable copy, shared between requests)."""

    id: str
    name: str
    timezone: str
    created_at: datetime


# Parsed configurations by version: a program changes rarely and is read by every checkout.
_parsed: dict[int, ProgramPublic] = {}
_VERSIONS = "loyalty.versions"  # session.info: (program version, catalog version) read in this transaction


class ProgramMissing(ServiceError):
    status, code, title = 503, "program_missing", "The program is not configured"


async def ensure_default(session: AsyncSession, currency: str, clock: Clock) -> None:
    """Create the default program if there is none (safe when several workers start at once)."""
    config = ProgramConfig.model_validate(rules.default_config(currency))
    await repository.insert_program_if_absent(
        session, ProgramRow(id=1, version=1, config=config.model_dump(mode="json"), updated_at=clock.now())
    )


async def get(session: AsyncSession) -> ProgramPublic:
    """The program as it stands in this transaction: a version check (one small read per transaction) and the
    parse cached by version; the whole document is read and parsed only when the version is new to this process.
    The same read gives the catalog's version, which :func:`cached` checks its copies against."""
    versions = session.info.get(_VERSIONS)
    if versions is None:
        versions = await repository.get_versions(session)
        if versions is None:
            raise ProgramMissing("Run `loyalty migrate` and start the service once to create the default program.")
        session.info[_VERSIONS] = versions
    program = _parsed.get(versions[0])
    if program is not None:
        return program
    row = await repository.get_program(session)
    if row is None:
        raise ProgramMissing("Run `loyalty migrate` and start the service once to create the default program.")
    program = ProgramPublic.model_validate({**row.config, "version": row.version, "updated_at": row.updated_at})
    if len(_parsed) > 64:
        _parsed.clear()
    _parsed[row.version] = program
    return program


def parsed(version: int) -> ProgramPublic | None:
    """The program at this version as this process has parsed it (:func:`get`), or None when it has not: for a
    read made outside any session, which carries the version along (``repository.VERSION_COLUMNS``)."""
    return _parsed.get(version)


def remember_versions(session: AsyncSession, versions: tuple[int, int] | None) -> None:
    """The versions another read of this transaction carried along (``repository.VERSION_COLUMNS``), so that
    :func:`get` need not read them; the first read of the transaction wins, as in :func:`get`. None (the read
    found no row, so carried nothing): :func:`get` reads them itself."""
    if versions is not None:
        session.info.setdefault(_VERSIONS, versions)


# --- the catalog: stores, punch card programs, voucher campaigns -------------------------------------------
# Every checkout reads them and an admin changes them rarely, so each process keeps copies, each tagged with the
# catalog version it was read under. Every change to them raises that version in its own transaction
# (:func:`catalog_changed`), and every request reads the version together with the program's, once: a copy is
# used only while the version it was read under is the current one. A copy is read after the version, so it is
# never older than the version it is filed under (under READ COMMITTED it may be newer, which is as current).

_catalog: dict[str, tuple[int, Any]] = {}


async def cached(session: AsyncSession, name: str, load: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``load(session)``, or this process's copy of it when the catalog has not changed since it was read.
    What ``load`` returns is shared between requests: make it immutable (rules' dataclasses, tuples)."""
    if _VERSIONS not in session.info:
        await get(session)
    version = session.info[_VERSIONS][1]
    copy = _catalog.get(name)
    if copy is not None and copy[0] == version:
        return copy[1]
    value = await load(session)
    if len(_catalog) > 10_000:
        _catalog.clear()
    _catalog[name] = (version, value)
    return value


async def catalog_changed(session: AsyncSession) -> None:
    """Call in the transaction that changes a store, a punch card program or a voucher campaign."""
    await repository.raise_catalog_version(session)
    session.info.pop(_VERSIONS, None)


def forget_cached() -> None:
    """Drop this process's copies of the program and the catalog (tests that recreate the database use it)."""
    _parsed.clear()
    _catalog.clear()


@event.listens_for(Session, "after_transaction_end")
def _forget_versions(session: Session, transaction: SessionTransaction) -> None:
    # The versions read belong to the transaction that read them (a session can outlive one, as imports do);
    # a flush or a savepoint ending inside it is not its end.
    if transaction.parent is None:
        session.info.pop(_VERSIONS, None)


async def update(session: AsyncSession, body: ProgramUpdate, clock: Clock, *, actor: str) -> ProgramPublic:
    """Replace the configuration, if ``body.version`` is the current one. The currency changes only while no
    wallet or gift card holds money, and no sale paid with them can give any back (409 ``currency_in_use``;
    checked as the change is made: stop the tills for it)."""
    config = ProgramConfig.model_validate(body.model_dump(exclude={"version", "updated_at"}))
    current = await get(session)
    if config.currency != current.currency:
        problem = rules.currency_change_problem(current.currency, config.currency,
                                                await ledger.stored_value_held(session),
                                                await ledger.stored_value_owed_back(session))
        if problem:
            raise CurrencyInUse(problem)
    values = {"version": body.version + 1, "config": config.model_dump(mode="json"), "updated_at": clock.now()}
    updated = await repository.update_program(session, expected_version=body.version, values=values)
    session.info.pop(_VERSIONS, None)
    if not updated:
        current = await get(session)
        raise ProgramVersionConflict(
            f"The program is at version {current.version}, not {body.version}: read it again, re-apply your "
            "change and send it with the new version.")
    await audit(session, clock, actor=actor, action="program.updated", target=str(values["version"]),
                data=values["config"])
    # The answer is built here, not by get(): get() would keep it in this process's copies under the new version
    # before the transaction commits, and a commit that failed then left the process pricing with a
    # configuration the database never held, under the version the next successful change takes.
    return ProgramPublic.model_validate({**values["config"], "version": values["version"],
                                         "updated_at": values["updated_at"]})


async def create_store(session: AsyncSession, body: StoreCreate, clock: Clock, *, actor: str) -> Store:
    store = Store(id=body.id or new_id("sto"), name=body.name, timezone=body.timezone, created_at=clock.now())
    if not await repository.add_store(session, store):
        raise StoreExists(f"A store with id {store.id!r} already exists.")
    await catalog_changed(session)
    await audit(session, clock, actor=actor, action="store.created", target=store.id,
                data={"name": store.name, "timezone": store.timezone})
    return store


async def get_store(session: AsyncSession, store_id: str) -> StoreInfo:
    store = await cached(session, f"store:{store_id}", lambda s: _store_info(s, store_id))
    if store is None:
        raise StoreNotFound(f"There is no store {store_id!r}.")
    return store


async def _store_info(session: AsyncSession, store_id: str) -> StoreInfo | None:
    row = await repository.get_store(session, store_id)
    return None if row is None else StoreInfo(row.id, row.name, row.timezone, row.created_at)


async def list_stores(session: AsyncSession, *, after: str | None, limit: int) -> list[Store]:
    return await repository.list_stores(session, after=after, limit=limit)
