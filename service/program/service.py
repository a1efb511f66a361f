"""The program's configuration (one versioned document) and the retailer's stores."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record as audit
from service.clock import Clock
from service.errors import ServiceError
from service.ids import new_id
from service.program import repository
from service.program.errors import ProgramVersionConflict, StoreExists, StoreNotFound
from service.program.models import ProgramRow, Store
from service.program.rules import default_config
from service.program.schemas import ProgramConfig, ProgramPublic, ProgramUpdate, StoreCreate

# Parsed configurations by version: a program changes rarely and is read by every checkout.
_parsed: dict[int, ProgramPublic] = {}


class ProgramMissing(ServiceError):
    status, code, title = 503, "program_missing", "The program is not configured"


async def ensure_default(session: AsyncSession, currency: str, clock: Clock) -> None:
    """Create the default program if there is none (safe when several workers start at once)."""
    config = ProgramConfig.model_validate(default_config(currency))
    await repository.insert_program_if_absent(
        session, ProgramRow(id=1, version=1, config=config.model_dump(mode="json"), updated_at=clock.now())
    )


async def get(session: AsyncSession) -> ProgramPublic:
    """The program as it stands in this transaction: a version check (one small read) and the parse cached
    by version; the whole document is read and parsed only when the version is new to this process."""
    program = _parsed.get(await repository.get_program_version(session))
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


async def update(session: AsyncSession, body: ProgramUpdate, clock: Clock, *, actor: str) -> ProgramPublic:
    config = ProgramConfig.model_validate(body.model_dump(exclude={"version", "updated_at"}))
    values = {"version": body.version + 1, "config": config.model_dump(mode="json"), "updated_at": clock.now()}
    if not await repository.update_program(session, expected_version=body.version, values=values):
        current = await get(session)
        raise ProgramVersionConflict(
            f"The program is at version {current.version}, not {body.version}: read it again, re-apply your "
            "change and send it with the new version.")
    await audit(session, clock, actor=actor, action="program.updated", target=str(values["version"]),
                data=values["config"])
    return await get(session)


async def create_store(session: AsyncSession, body: StoreCreate, clock: Clock, *, actor: str) -> Store:
    store = Store(id=body.id or new_id("sto"), name=body.name, timezone=body.timezone, created_at=clock.now())
    if not await repository.add_store(session, store):
        raise StoreExists(f"A store with id {store.id!r} already exists.")
    await audit(session, clock, actor=actor, action="store.created", target=store.id,
                data={"name": store.name, "timezone": store.timezone})
    return store


async def get_store(session: AsyncSession, store_id: str) -> Store:
    store = await repository.get_store(session, store_id)
    if store is None:
        raise StoreNotFound(f"There is no store {store_id!r}.")
    return store


async def list_stores(session: AsyncSession, *, after: str | None, limit: int) -> list[Store]:
    return await repository.list_stores(session, after=after, limit=limit)
