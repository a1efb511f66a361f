"""Punch cards: programs (admin), the member's cards, and what checkout asks of them: the rewards a basket
redeems, the rewards its stamps issue, and what a void or return takes back. Never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record as audit
from service.clock import Clock
from service.events import service as events
from service.ids import new_id
from service.ledger import service as ledger
from service.ledger.rules import Movement
from service.members import service as members_service
from service.program import service as program_service
from service.punchcards import repository, rules
from service.punchcards.errors import PunchProgramNotFound, RewardNotAvailable
from service.punchcards.models import PunchProgram, PunchReward
from service.punchcards.schemas import PunchCardPublic, PunchProgramCreate, PunchProgramPublic, RewardPublic


def to_public(row: PunchProgram) -> PunchProgramPublic:
    return PunchProgramPublic(
        id=row.id, name=row.name, qualifying={"skus": row.qualifying_skus, "categories": row.qualifying_categories},
        stamps_required=row.stamps_required,
        reward={"skus": row.reward_skus, "categories": row.reward_categories, "max_value": row.reward_max_value},
        reward_valid_days=row.reward_valid_days, active=row.active)


def to_rules(row: PunchProgram) -> rules.Program:
    return rules.Program(
        id=row.id, name=row.name, qualifying_skus=frozenset(row.qualifying_skus),
        qualifying_categories=frozenset(row.qualifying_categories), stamps_required=row.stamps_required,
        reward_skus=frozenset(row.reward_skus), reward_categories=frozenset(row.reward_categories),
        max_value=row.reward_max_value, reward_valid_days=row.reward_valid_days,
        created_at=row.created_at)


def _apply(row: PunchProgram, body: PunchProgramCreate) -> None:
    row.name = body.name
    row.qualifying_skus, row.qualifying_categories = list(body.qualifying.skus), list(body.qualifying.categories)
    row.stamps_required = body.stamps_required
    row.reward_skus, row.reward_categories = list(body.reward.skus), list(body.reward.categories)
    row.reward_max_value = body.reward.max_value
    row.reward_valid_days = body.reward_valid_days
    row.active = body.active


async def create_program(session: AsyncSession, body: PunchProgramCreate, clock: Clock, *,
                         actor: str) -> PunchProgramPublic:
    now = clock.now()
    row = PunchProgram(id=new_id("pcp"), created_at=now, updated_at=now, qualifying_skus=[], qualifying_categories=[],
                       reward_skus=[], reward_categories=[], name="", stamps_required=1, reward_valid_days=1,
                       active=True)
    _apply(row, body)
    session.add(row)
    await session.flush()
    await program_service.catalog_changed(session)
    await ledger.ensure_stamp_account(session, row.id, now)
    await audit(session, clock, actor=actor, action="punch_program.created", target=row.id,
                data=body.model_dump(mode="json"))
    return to_public(row)


async def _program(session: AsyncSession, program_id: str) -> PunchProgram:
    row = await repository.get_program(session, program_id)
    if row is None:
        raise PunchProgramNotFound(f"There is no punch-card program {program_id!r}.")
    return row


async def get_program(session: AsyncSession, program_id: str) -> PunchProgramPublic:
    return to_public(await _program(session, program_id))


async def update_program(session: AsyncSession, program_id: str, body: PunchProgramCreate, clock: Clock, *,
                         actor: str) -> PunchProgramPublic:
    """Replace a program's configuration. Stamps and rewards already earned keep counting against it; each reward
    keeps the stamps it cost. Lowering ``stamps_required`` below what members hold issues nothing now (a write to
    every member's card): their next stamping sale does, and their cards say so meanwhile (``rewards_waiting``)."""
    row = await _program(session, program_id)
    _apply(row, body)
    row.updated_at = clock.now()
    await session.flush()
    await program_service.catalog_changed(session)
    await audit(session, clock, actor=actor, action="punch_program.updated", target=row.id,
                data=body.model_dump(mode="json"))
    return to_public(row)


async def list_programs(session: AsyncSession, *, after: str | None, limit: int) -> list[PunchProgramPublic]:
    return [to_public(row) for row in await repository.list_programs(session, after=after, limit=limit)]


def effective_status(reward: PunchReward, now: datetime) -> str:
    """An available reward past its expiry is expired, whether or not the sweep has written so yet."""
    return "expired" if reward.status == "available" and reward.expires_at <= now else reward.status


async def member_cards(session: AsyncSession, member_id: str, now: datetime, *, after: str | None = None,
                       limit: int | None = None) -> list[PunchCardPublic]:
    """Every active program, and every other program the member holds stamps or rewards of, by program id: those
    after ``after``, at most ``limit`` (a page; a member holds a card of each of a handful of programs, so the
    page is cut from the whole list)."""
    await members_service.get(session, member_id)
    balances = await ledger.balances(session, member_id)
    rewards = await repository.member_rewards(session, member_id)
    held = {kind.removeprefix(rules.STAMPS_PREFIX) for kind in balances if kind.startswith(rules.STAMPS_PREFIX)}
    held |= {r.program_id for r in rewards}
    programs = {p.id: p for p in await repository.active_programs(session)}
    for p in await repository.programs_by_id(session, sorted(held - set(programs))):
        programs[p.id] = p
    return [PunchCardPublic(
        program_id=p.id, name=p.name, stamps=balances.get(rules.account_kind(p.id), 0),
        stamps_required=p.stamps_required,
        rewards_waiting=rules.rewards_waiting(balances.get(rules.account_kind(p.id), 0), p.stamps_required),
        rewards=[RewardPublic(id=r.id, status=effective_status(r, now), expires_at=r.expires_at)
                 for r in rewards if r.program_id == p.id],
    ) for p in sorted(programs.values(), key=lambda p: p.id) if after is None or p.id > after][:limit]


async def active_programs(session: AsyncSession) -> tuple[rules.Program, ...]:
    """The active programs, from this process's copy while the catalog is unchanged (every checkout reads them)."""
    return await program_service.cached(session, "punch_programs.active", _load_active)


async def _load_active(session: AsyncSession) -> tuple[rules.Program, ...]:
    return tuple(to_rules(row) for row in await repository.active_programs(session))


async def claims(session: AsyncSession, member_id: str, reward_ids: Sequence[str], now: datetime, *,
                 lock: bool) -> list[rules.Claim]:
    """The rewards a basket redeems, in request order; each must be the member's and available now (409
    ``reward_not_available`` otherwise). ``lock``: hold the rows until the transaction ends (commit)."""
    if not reward_ids:
        return []
    rows = {r.id: r for r in await repository.rewards_by_id(session, reward_ids, lock=lock)}
    for reward_id in reward_ids:
        row = rows.get(reward_id)
        if row is None or row.member_id != member_id:
            raise RewardNotAvailable(f"Reward {reward_id!r} does not belong to this member.", reward_id=reward_id)
        status = effective_status(row, now)
        if status != "available":
            raise RewardNotAvailable(f"Reward {reward_id!r} is {status} and cannot be used.", reward_id=reward_id,
                                     reward_status=status)
    programs = {p.id: to_rules(p) for p in await repository.programs_by_id(
        session, sorted({r.program_id for r in rows.values()}))}
    return [_claim(rows[reward_id], programs) for reward_id in reward_ids]


def _claim(reward: Any, programs: Mapping[str, rules.Program]) -> rules.Claim:
    """A reward (a row with its terms) as a basket redeems it: on what it was issued for (``rules.as_issued``)."""
    terms = rules.Terms(frozenset(reward.free_skus), frozenset(reward.free_categories), reward.free_max_value)
    return rules.Claim(reward.id, rules.as_issued(programs[reward.program_id], terms))


async def available_rewards(session: AsyncSession, member_id: str, now: datetime) -> list[rules.Claim]:
    """The member's rewards that could be used now, soonest-expiring first (for offers). Their programs come
    from this process's copy of the active ones; a program since deactivated is read."""
    rewards = await repository.usable_rewards(session, member_id, now)
    if not rewards:
        return []
    programs = {p.id: p for p in await active_programs(session)}
    missing = sorted({r.program_id for r in rewards} - set(programs))
    programs |= {p.id: to_rules(p) for p in await repository.programs_by_id(session, missing)}
    return [_claim(r, programs) for r in rewards]


def prefetch_available_rewards(session: AsyncSession, member_id: str, now: datetime) -> None:
    """Announce :func:`available_rewards`' read (``db.prefetch``: it goes out with the request's other announced
    reads)."""
    repository.prefetch_usable_rewards(session, member_id, now)


async def redeem(session: AsyncSession, reward_ids: Sequence[str], transaction_id: str, now: datetime) -> None:
    """Mark the rewards used by a commit. Only rewards still available change; a reward taken meanwhile is a 409
    and the whole commit rolls back."""
    changed = await repository.set_status(session, reward_ids, from_status="available", to_status="redeemed",
                                          at=now, redeemed_by=transaction_id)
    if changed != len(reward_ids):
        raise RewardNotAvailable("A reward in this basket was used by another transaction a moment ago.")


async def issue(session: AsyncSession, member_id: str, transaction_id: str, due: Mapping[str, int],
                programs: Mapping[str, rules.Program], *, occurred_at: datetime,
                now: datetime) -> list[SimpleNamespace]:
    """Create the rewards the stamps of a commit turned into, as plain copies of their rows. ``programs``: the
    programs as the commit priced them (this process's copies, checked against the catalog's version), so no read
    here; each reward keeps the stamps it took (``stamps_required`` then, the figure its ledger entry took), so
    that revoking it gives back those whatever the program asks by then, and what it makes free
    (``rules.terms_of``), so that it is redeemed on those whatever the program says by then.

    A reward is earned as at the sale's ``occurred_at``, as the sale's points are: its validity counts from then
    (a till back online two days late leaves it two days fewer; one from a history imported may be over already,
    as it would have been at the till). It is issued ``now``."""
    terms = {program_id: rules.terms_of(programs[program_id]) for program_id in due}
    rows = [SimpleNamespace(
        id=new_id("rwd"), member_id=member_id, program_id=program_id, status="available", issued_at=now,
        expires_at=occurred_at + timedelta(days=programs[program_id].reward_valid_days), issued_by=transaction_id,
        redeemed_by=None, changed_at=now, stamps_cost=programs[program_id].stamps_required,
        free_skus=sorted(terms[program_id].skus), free_categories=sorted(terms[program_id].categories),
        free_max_value=terms[program_id].max_value)
        for program_id, count in sorted(due.items()) for _ in range(count)]
    await repository.add_rewards(session, rows)
    for r in rows:
        await events.emit(session, "reward.issued", {
            "reward_id": r.id, "member_id": member_id, "program_id": r.program_id, "transaction_id": transaction_id,
            "expires_at": r.expires_at}, at=now, member_id=member_id)
    return rows


def issued_public(rows: Sequence[PunchReward | SimpleNamespace]) -> list[dict]:
    """The rewards as a receipt lists them: by id, the order they read back in (``issued_by``), so that a sale's
    receipt says the same when committed and when read again."""
    return [{"id": r.id, "program_id": r.program_id, "expires_at": r.expires_at.isoformat()}
            for r in sorted(rows, key=lambda r: r.id)]


async def issued_by(session: AsyncSession, transaction_id: str) -> list[dict]:
    return issued_public(await repository.rewards_issued_by(session, transaction_id))


async def take_back(session: AsyncSession, member_id: str, transaction_id: str, removals: Mapping[str, int],
                    balances: Mapping[str, int], now: datetime, *, kind: str) -> tuple[Movement, ...]:
    """Remove stamps on a void or return. When that leaves the card below zero, unused rewards of the program
    are revoked (those this transaction issued first, then the newest) until it is back at zero or more, each
    giving back the stamps it cost when issued; what stays below zero is a deficit that later stamps fill."""
    movements = []
    for program_id, count in sorted(removals.items()):
        if count <= 0:
            continue
        account, contra = rules.account_kind(program_id), rules.contra_account(program_id)
        movements.append(Movement(account=account, asset=account, amount=-count, contra=contra, kind=kind,
                                  allow_negative=True))
        after = balances.get(account, 0) - count
        if after >= 0:
            continue
        unused = await repository.unused_rewards(session, member_id, program_id, now)
        unused.sort(key=lambda r: r.issued_by != transaction_id)  # stable: this transaction's, then newest
        movements.extend(await _revoke(session, unused, after, now, from_status="available"))
    return tuple(movements)


async def _revoke(session: AsyncSession, rewards: Sequence[PunchReward], balance: int, now: datetime, *,
                  from_status: str) -> tuple[Movement, ...]:
    """Revoke the first of ``rewards`` (all of one program, locked, in ``from_status``) until a card at
    ``balance`` is back at zero or more; each gives back the stamps it cost (one ``revoke`` movement)."""
    revoked = list(rewards[:rules.rewards_to_revoke(balance, [r.stamps_cost for r in rewards])])
    if not revoked:
        return ()
    await repository.set_status(session, [r.id for r in revoked], from_status=from_status, to_status="revoked",
                                at=now)
    account = rules.account_kind(revoked[0].program_id)
    return (Movement(account=account, asset=account, amount=sum(r.stamps_cost for r in revoked),
                     contra=rules.contra_account(revoked[0].program_id), kind="revoke"),)


def used_a_reward(applied: Sequence[Mapping]) -> bool:
    """Whether a sale used punch-card rewards, from what its receipt lists as applied (no read for a sale that
    used none)."""
    return any(a.get("kind") == "punch_reward" for a in applied)


async def programs_redeemed_by(session: AsyncSession, transaction_id: str) -> list[str]:
    """The programs of the rewards a transaction used (a void locks their stamp accounts with the sale's own,
    before the rewards themselves: the one lock order). Read without a lock: a reward never changes program."""
    return await repository.programs_redeemed_by(session, transaction_id)


async def restore_redeemed(session: AsyncSession, transaction_id: str, balances: Mapping[str, int],
                           now: datetime) -> tuple[Movement, ...]:
    """A void gives back the rewards its transaction used: available again, unless their program's card is in
    deficit (``balances``: the cards as the void leaves them so far, their accounts locked). Those are revoked
    instead, as a return revokes unused rewards (newest first, until the card is at zero or more), and their
    stamps come back: voiding the sale that earned a reward then the sale that used it would otherwise leave the
    reward usable beside the deficit its earning sale's void made, where the other order revokes it."""
    rows = await repository.redeemed_by(session, transaction_id)
    movements: list[Movement] = []
    for program_id in sorted({r.program_id for r in rows}):
        rewards = sorted((r for r in rows if r.program_id == program_id), key=lambda r: (r.issued_at, r.id),
                         reverse=True)  # newest first, as unused_rewards
        movements.extend(await _revoke(session, rewards, balances.get(rules.account_kind(program_id), 0), now,
                                       from_status="redeemed"))
    await repository.set_status(session, [r.id for r in rows], from_status="redeemed", to_status="available",
                                at=now)  # what _revoke took is revoked already, and stays so
    return tuple(movements)


async def expire_rewards(session: AsyncSession, as_of: datetime, now: datetime) -> int:
    """The sweep: available rewards past their expiry become expired, but for those a till holds (left to the next
    sweep). Running again changes nothing more."""
    return await repository.expire(session, as_of, now)


async def issued_by_status(session: AsyncSession, start: datetime | None, end: datetime, now: datetime) -> list[Row]:
    """For the redemption report: ``(programme id, name, status, past its expiry at now, count)`` of the rewards
    issued in ``[start, end)``."""
    return await repository.issued_by_status(session, start, end, now)
