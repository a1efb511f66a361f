"""Vouchers: campaigns (admin), issuing codes (bulk, targeted, and automatically by a sale's spend), and what
checkout asks of them: screen the codes a basket names, load them under lock, mark them used, issue threshold
vouchers, and undo both on a void. Never commits (except :func:`screen`'s failure count, which must outlive the
request's rollback and is written through :class:`service.ratelimit.Guard`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from service import ratelimit
from service.audit import record as audit
from service.clock import Clock, told_end
from service.db import holds_writers_off
from service.events import service as events
from service.ids import new_id, normalize_code, random_code
from service.members import service as members_service
from service.members.models import Member
from service.personalization.rules import LIFECYCLES, QUADRANTS, message
from service.personalization.schemas import VoucherOffer
from service.program import rules as program_rules
from service.program import service as program_service
from service.program.schemas import ProgramPublic
from service.vouchers import repository, rules
from service.vouchers.errors import (
    CampaignNotFound,
    CampaignNotIssuing,
    MemberNotInAudience,
    UnknownVoucher,
    VoucherAlreadyUsed,
    VoucherExpired,
    VoucherLimitReached,
    VoucherNotFound,
)
from service.vouchers.models import Voucher, VoucherCampaign
from service.vouchers.schemas import CampaignCreate, CampaignPublic, IssueRequest, VoucherDetail, VoucherPublic

CODE_LENGTH = 13  # 13 symbols of 30: 63.8 bits (service.ids.random_code)
INSERT_ATTEMPTS = 5
LOOKUP_SCOPE = "voucher_lookup"


# --- campaigns ----------------------------------------------------------------------------------------------

def to_public(row: VoucherCampaign) -> CampaignPublic:
    threshold = row.auto_issue_spend_threshold
    return CampaignPublic.model_validate({
        "id": row.id, "name": row.name, "kind": row.kind, "value": row.value, "min_spend": row.min_spend,
        "skus": row.skus, "categories": row.categories, "valid_from": row.valid_from, "valid_until": row.valid_until,
        "valid_days": row.valid_days, "per_member_limit": row.per_member_limit, "total_limit": row.total_limit,
        "stackable": row.stackable, "audience": row.audience,
        "auto_issue": None if threshold is None else {"spend_threshold": threshold}, "active": row.active,
        "issued_count": row.issued_count,
    })


def _audience(data: dict | None) -> rules.Audience | None:
    if not data:
        return None
    return rules.Audience(*(None if data.get(k) is None else frozenset(data[k])
                            for k in ("tiers", "quadrants", "lifecycles")))


def to_rules(row: VoucherCampaign) -> rules.Campaign:
    return rules.Campaign(
        id=row.id, name=row.name, kind=row.kind, value=row.value, min_spend=row.min_spend,
        skus=frozenset(row.skus), categories=frozenset(row.categories), stackable=row.stackable,
        audience=_audience(row.audience), valid_from=row.valid_from, valid_until=row.valid_until,
        valid_days=row.valid_days, per_member_limit=row.per_member_limit,
        auto_issue_spend_threshold=row.auto_issue_spend_threshold, active=row.active, created_at=row.created_at)


def _apply(row: VoucherCampaign, body: CampaignCreate) -> None:
    row.name, row.kind, row.value, row.min_spend = body.name, body.kind, body.value, body.min_spend
    row.skus, row.categories = list(body.skus), list(body.categories)
    row.valid_from, row.valid_until, row.valid_days = body.valid_from, body.valid_until, body.valid_days
    row.per_member_limit, row.total_limit = body.per_member_limit, body.total_limit
    row.stackable, row.active = body.stackable, body.active
    row.audience = body.audience.model_dump(mode="json") if body.audience else None
    row.auto_issue_spend_threshold = body.auto_issue.spend_threshold if body.auto_issue else None


async def create_campaign(session: AsyncSession, body: CampaignCreate, clock: Clock, *,
                          actor: str) -> CampaignPublic:
    now = clock.now()
    row = VoucherCampaign(id=new_id("cmp"), name="", kind=body.kind, min_spend=0, skus=[], categories=[],
                          stackable=False, active=True, issued_count=0, created_at=now, updated_at=now)
    _apply(row, body)
    session.add(row)
    await session.flush()
    await program_service.catalog_changed(session)
    await audit(session, clock, actor=actor, action="voucher_campaign.created", target=row.id,
                data=body.model_dump(mode="json"))
    return to_public(row)


async def _campaign(session: AsyncSession, campaign_id: str, *, lock: bool = False) -> VoucherCampaign:
    row = await repository.get_campaign(session, campaign_id, lock=lock)
    if row is None:
        raise CampaignNotFound(f"There is no voucher campaign {campaign_id!r}.")
    return row


async def get_campaign(session: AsyncSession, campaign_id: str) -> CampaignPublic:
    return to_public(await _campaign(session, campaign_id))


async def update_campaign(session: AsyncSession, campaign_id: str, body: CampaignCreate, clock: Clock, *,
                          actor: str) -> CampaignPublic:
    """Replace a campaign's configuration. Vouchers already issued keep their dates; the rest (what they take
    off, on what, for whom) follows the campaign. A ``total_limit`` below what was already issued is refused: the
    row is locked first, so the count compared is the one issuing cannot raise meanwhile."""
    row = await _campaign(session, campaign_id, lock=True)
    if body.total_limit is not None and body.total_limit < row.issued_count:
        raise VoucherLimitReached(f"The campaign has already issued {row.issued_count} vouchers; total_limit cannot "
                                  "be lower.", issued_count=row.issued_count)
    _apply(row, body)
    row.updated_at = clock.now()
    await session.flush()
    await program_service.catalog_changed(session)
    await audit(session, clock, actor=actor, action="voucher_campaign.updated", target=row.id,
                data=body.model_dump(mode="json"))
    return to_public(row)


async def list_campaigns(session: AsyncSession, *, after: str | None, limit: int) -> list[CampaignPublic]:
    return [to_public(row) for row in await repository.list_campaigns(session, after=after, limit=limit)]


# --- issuing ------------------------------------------------------------------------------------------------

def member_facts(member: Member, program: ProgramPublic, segments: frozenset[str] = frozenset()) -> rules.MemberFacts:
    """What an audience is matched against: the tier, and the quadrant and lifecycle among the member's segments
    (personalization's running figures; unknown when not given)."""
    quadrant = next((s for s in segments if s in QUADRANTS), None)
    lifecycle = next((s for s in segments if s in LIFECYCLES), None)
    return rules.MemberFacts(tier=program_rules.tier_code_of(program.tiers, member.tier_code), quadrant=quadrant,
                             lifecycle=lifecycle)


async def _segments(session: AsyncSession, member: Member, program: ProgramPublic, now: datetime) -> frozenset[str]:
    """The member's tier, quadrant and lifecycle now, from personalization's running figures."""
    from service.personalization import service as personalization  # imported late: its offers import this module

    activity = await personalization.activity_for_commit(session, member.id)
    tier_code = program_rules.tier_code_of(program.tiers, member.tier_code)
    return personalization.member_segments(member, activity, tier_code, now.date())


def voucher_public(row: Voucher, now: datetime) -> VoucherPublic:
    return VoucherPublic(id=row.id, code=row.code, campaign_id=row.campaign_id, member_id=row.member_id,
                         status=rules.status_at(row.status, row.valid_until, now), valid_from=row.valid_from,
                         valid_until=row.valid_until, issued_at=row.issued_at)


def _issued_public(values: dict[str, Any]) -> VoucherPublic:
    """A voucher just inserted, from the values it was inserted with (no ORM object per voucher: bulk issue
    makes ten thousand)."""
    return VoucherPublic.model_construct(
        id=values["id"], code=values["code"], campaign_id=values["campaign_id"], member_id=values["member_id"],
        status=values["status"], valid_from=values["valid_from"], valid_until=values["valid_until"],
        issued_at=values["issued_at"])


async def _insert(session: AsyncSession, campaign: rules.Campaign, count: int, member_id: str | None, now: datetime,
                  issued_by: str | None = None, earned_at: datetime | None = None) -> list[VoucherPublic]:
    """Create ``count`` vouchers with fresh codes in multi-row inserts, issued ``now``, their validity counted from
    ``earned_at`` (a backdated sale's time; ``now`` without one). A code that collides with an existing one (one
    chance in 16 billion per code even with a billion codes out) rolls the batch back (a savepoint) and the batch
    is drawn again."""
    valid_from, valid_until = rules.validity(campaign, earned_at or now)
    for _ in range(INSERT_ATTEMPTS):
        rows = [{"id": new_id("vch"), "code": random_code(CODE_LENGTH), "campaign_id": campaign.id,
                 "member_id": member_id, "status": "active", "issued_at": now, "valid_from": valid_from,
                 "valid_until": valid_until, "issued_by": issued_by,
                 "earned_threshold": campaign.auto_issue_spend_threshold if issued_by else None,
                 "changed_at": now} for _ in range(count)]
        if len({r["code"] for r in rows}) == count and await repository.insert_vouchers(session, rows):
            return [_issued_public(r) for r in rows]
    raise RuntimeError("could not draw unique voucher codes")  # unreachable in practice: a 500, nothing written


async def _reserve(session: AsyncSession, row: VoucherCampaign, count: int, member_id: str | None) -> str | None:
    """Count the vouchers against the campaign's limits (None) or say which limit they would pass. The total is
    raised by a conditional update that also locks the campaign's row, so the member's count read after it is
    exact even while other issuers wait."""
    if not await repository.reserve(session, row.id, count):
        await session.refresh(row, ["issued_count"])
        left = (row.total_limit or 0) - row.issued_count
        return (f"The campaign {row.name!r} is limited to {row.total_limit} vouchers and only {left} can still be "
                f"issued; {count} were asked for.")
    if member_id is not None and row.per_member_limit is not None:
        held = await repository.held_by_member(session, row.id, member_id)
        if rules.over_limit(row.per_member_limit, held, count):
            await repository.give_back(session, row.id, count)
            return (f"The member already holds {held} vouchers of the campaign {row.name!r} (at most "
                    f"{row.per_member_limit} per member).")
    return None


async def issue(session: AsyncSession, campaign_id: str, body: IssueRequest, clock: Clock, *,
                actor: str) -> list[VoucherPublic]:
    """Targeted issue (one voucher for a member) or bulk issue (``count`` bearer codes); 409
    ``voucher_limit_reached`` when the limits do not allow it (nothing is issued then)."""
    now = clock.now()
    row = await _campaign(session, campaign_id)
    campaign = to_rules(row)
    problem = rules.can_issue(campaign, now)
    if problem:
        raise CampaignNotIssuing(problem)
    if body.member_id is not None:
        member = await members_service.get_taking_value(session, body.member_id)
        program = await program_service.get(session)
        facts = member_facts(member, program, await _segments(session, member, program, now))
        if not rules.audience_matches(campaign.audience, facts):
            raise MemberNotInAudience(f"The campaign {row.name!r} is not offered to this member.")
    count = body.count or 1
    problem = await _reserve(session, row, count, body.member_id)
    if problem:
        raise VoucherLimitReached(problem)
    vouchers = await _insert(session, campaign, count, body.member_id, now)
    await audit(session, clock, actor=actor, action="vouchers.issued", target=row.id,
                data={"member_id": body.member_id, "count": count})
    if body.member_id is not None:
        await _announce(session, vouchers, now)
    else:  # bearer codes are as good as cash: the event says how many, never which
        await events.emit(session, "voucher.issued", {"campaign_id": row.id, "count": count, "member_id": None},
                          at=now)
    return vouchers


async def _announce(session: AsyncSession, vouchers: Sequence[VoucherPublic], now: datetime) -> None:
    """One ``voucher.issued`` event per voucher issued to a member (targeted, or earned by a sale)."""
    for voucher in vouchers:
        await events.emit(session, "voucher.issued", {
            "campaign_id": voucher.campaign_id, "count": 1, "member_id": voucher.member_id, "voucher_id": voucher.id,
            "valid_until": voucher.valid_until}, at=now, member_id=voucher.member_id)


async def issue_for_sale(session: AsyncSession, member_id: str, facts: rules.MemberFacts, transaction_id: str,
                         net_spend: int, *, occurred_at: datetime, now: datetime) -> list[VoucherPublic]:
    """The threshold vouchers a committed sale earns: one per campaign whose ``spend_threshold`` its net spend
    reaches, within the campaign's limits (a campaign at its limit issues nothing, silently). As at the sale's
    ``occurred_at`` (``rules.auto_issued``): their validity counts from it; they are issued ``now``."""
    campaigns = await program_service.cached(session, "voucher_campaigns.auto_issue", _load_auto_issue)
    issued: list[VoucherPublic] = []
    for campaign in rules.auto_issued(campaigns, net_spend, facts, earned_at=occurred_at, now=now):
        row = await _campaign(session, campaign.id)  # its limits and issued count, read when one is due
        if await _reserve(session, row, 1, member_id) is None:
            issued += await _insert(session, campaign, 1, member_id, now, issued_by=transaction_id,
                                    earned_at=occurred_at)
    await _announce(session, issued, now)
    return issued


async def _load_auto_issue(session: AsyncSession) -> tuple[rules.Campaign, ...]:
    return tuple(to_rules(row) for row in await repository.auto_issue_campaigns(session))


def issued_public(vouchers: Sequence[VoucherPublic]) -> list[dict]:
    """The vouchers as a receipt lists them: by id, the order they read back in (``issued_by``), so that a sale's
    receipt says the same when committed and when read again."""
    return [v.model_dump(mode="json") for v in sorted(vouchers, key=lambda v: v.id)]


async def issued_by(session: AsyncSession, transaction_id: str, now: datetime) -> list[dict]:
    return issued_public([voucher_public(v, now) for v in await repository.issued_by(session, transaction_id)])


# --- look-ups and redemption --------------------------------------------------------------------------------

async def screen(guard: ratelimit.Guard, codes: Sequence[str], now: datetime, *,
                 reading: AsyncSession | None = None) -> list[str]:
    """Check that the codes a request names exist, before the request writes anything. A key that has
    used up its failed look-ups is refused (429) whatever it asks; each unknown code is counted as a failure in
    a transaction of its own (it stays counted though the request answers an error and rolls back). Returns the
    codes normalized, in request order.

    The two reads stand alone and go out as one statement, with any read the session announced before
    (``db.prefetch``): on ``reading``, the request's session before it has written anything (a quote's, a
    commit's), or else on a session of their own, without a transaction on PostgreSQL. Not on a session that
    holds other writers off (SQLite's for a commit): the failures' count below could not be written."""
    normalized = [normalize_code(code) for code in codes]
    if not normalized:
        return normalized
    if reading is not None and not holds_writers_off(reading):
        found = await _screened(reading, guard, normalized, now)
    else:
        async with guard.db.statements(write=False) as session:
            found = await _screened(session, guard, normalized, now)
    unknown = [code for code in normalized if code not in found]
    if unknown:
        if reading is not None:
            # The request answers an error: it gives its connection back before the count takes one of its own.
            # Holding it, a burst of such requests would hold every connection of the pool, each waiting for a
            # second one (found by a burst at a pool of 2).
            await reading.rollback()
        standing = await guard.fail(now, amount=len(unknown))
        if standing.failures > guard.limit.max_failures:  # failures that passed the check together: none answered
            ratelimit.raise_limited(standing)
        raise UnknownVoucher(f"There is no voucher {unknown[0]}; check the code.", voucher_code=unknown[0])
    return normalized


async def _screened(session: AsyncSession, guard: ratelimit.Guard, codes: list[str], now: datetime) -> set[str]:
    """Which of ``codes`` exist, after refusing a key that has used up its failures; one statement."""
    guard.prefetch_check(session, now)
    repository.prefetch_existing_codes(session, codes)
    await guard.check(session, now)
    return await repository.existing_codes(session, codes)


async def _campaign_rules(session: AsyncSession, ids: Iterable[str]) -> dict[str, rules.Campaign]:
    """The campaigns' rules by id: this process's copies while the catalog has not changed (creating or changing
    a campaign raises the catalog's version; the issued count, which issuing changes, is not in the rules)."""
    return {campaign_id: await program_service.cached(session, f"voucher_campaign:{campaign_id}",
                                                      partial(_read_campaign_rules, campaign_id=campaign_id))
            for campaign_id in sorted(set(ids))}


async def _read_campaign_rules(session: AsyncSession, campaign_id: str) -> rules.Campaign:
    return to_rules(await _campaign(session, campaign_id))


def _to_rules_voucher(row: Voucher, campaign: rules.Campaign) -> rules.Voucher:
    return rules.Voucher(id=row.id, code=row.code, campaign=campaign, member_id=row.member_id, status=row.status,
                         valid_from=row.valid_from, valid_until=row.valid_until)


async def claims(session: AsyncSession, codes: Sequence[str], now: datetime, *, lock: bool,
                 timezone: str | None = None) -> list[rules.Voucher]:
    """The vouchers a basket redeems (normalized codes, already screened), in request order; each must be unused
    and valid now (409 ``voucher_already_used`` / ``voucher_expired``). ``lock``: hold the rows until the
    transaction ends (commit): a concurrent till redeeming the same code waits, then sees it used."""
    if not codes:
        return []
    rows = {r.code: r for r in await repository.by_codes(session, codes, lock=lock)}
    campaigns = await _campaign_rules(session, {r.campaign_id for r in rows.values()})
    result = []
    for code in codes:
        row = rows.get(code)
        if row is None:
            raise UnknownVoucher(f"There is no voucher {code}; check the code.", voucher_code=code)
        status = rules.status_at(row.status, row.valid_until, now)
        if status == "redeemed":
            raise VoucherAlreadyUsed(f"Voucher {code} was already used.", voucher_code=code)
        if status == "expired":
            ended = f": it was valid until {told_end(row.valid_until, timezone)}" if row.valid_until else ""
            raise VoucherExpired(f"Voucher {code} has expired{ended}.", voucher_code=code)
        if status == "void":
            raise VoucherExpired(f"Voucher {code} was withdrawn (the sale that earned it was voided or returned).",
                                 voucher_code=code)
        result.append(_to_rules_voucher(row, campaigns[row.campaign_id]))
    return result


def prefetch_quote(session: AsyncSession, member_id: str, codes: Sequence[str], now: datetime) -> None:
    """Announce a quote's voucher reads (``db.prefetch``): the named codes' (:func:`claims` without the lock) and
    the member's vouchers the offers list (:func:`offered`)."""
    if codes:
        repository.prefetch_by_codes(session, codes)
    repository.prefetch_unexpired(session, member_id, now)


async def held(session: AsyncSession, member_id: str, vouchers: Sequence[rules.Voucher], *,
               lock: bool) -> dict[str, int]:
    """For the bearer codes a basket redeems whose campaigns limit vouchers per member: how many of each campaign
    the member holds already (``lock``: under the campaigns' row locks, as issuers count)."""
    limited = sorted({v.campaign.id for v in vouchers if v.member_id is None and v.campaign.per_member_limit})
    return await repository.held_counts(session, member_id, limited, lock=lock)


async def redeem(session: AsyncSession, vouchers: Sequence[rules.Voucher], member_id: str, transaction_id: str,
                 now: datetime) -> None:
    """Mark the vouchers used by a commit, in its transaction. Only vouchers still active change; one taken
    meanwhile is a 409 and the whole commit rolls back. Bearer codes become the member's."""
    ids = [v.id for v in vouchers]
    changed = await repository.set_status(session, ids, from_status="active", to_status="redeemed", at=now,
                                          redeemed_by=transaction_id, redeemed_at=now)
    if changed != len(ids):
        raise VoucherAlreadyUsed("A voucher in this basket was used by another sale a moment ago.")
    await repository.claim_bearer(session, [v.id for v in vouchers if v.member_id is None], member_id)


async def undo_sale(session: AsyncSession, transaction_id: str, now: datetime,
                    spend_left: Callable[[Sequence[str]], Awaitable[Mapping[str, int]]]) -> None:
    """A void: the vouchers the sale used come back while still valid (past their end they become expired), and
    the unused vouchers it earned are revoked (their places count no more against the campaigns' limits).

    A used voucher that a sale earned, and that sale's voids or returns have taken back since
    (``rules.withdrawn_by_return`` on what ``spend_left`` says each earning sale has left), does not come back: it
    is withdrawn as it would have been had it still been unused. Otherwise voiding the sale that used it gave it
    back, usable again, for spend the customer had been refunded."""
    used = await repository.redeemed_by(session, transaction_id)
    earning = sorted({v.issued_by for v in used if v.issued_by})
    left = await spend_left(earning) if earning else {}
    forfeit = [v for v in used if v.issued_by in left and rules.withdrawn_by_return(
        [(v.id, v.earned_threshold)], left[v.issued_by])]
    back = [v for v in used if v not in forfeit]
    valid = [v.id for v in back if rules.status_at("active", v.valid_until, now) == "active"]
    await repository.set_status(session, valid, from_status="redeemed", to_status="active", at=now,
                                redeemed_by=None, redeemed_at=None)
    await repository.set_status(session, [v.id for v in back if v.id not in set(valid)], from_status="redeemed",
                                to_status="expired", at=now)
    await _withdraw(session, forfeit, now, from_status="redeemed")
    await _withdraw(session, await _unused_earned(session, transaction_id), now)


async def _unused_earned(session: AsyncSession, transaction_id: str) -> list[Voucher]:
    """The unused vouchers a sale earned, locked."""
    return [v for v in await repository.issued_by(session, transaction_id, lock=True) if v.status == "active"]


async def _withdraw(session: AsyncSession, vouchers: Sequence[Voucher], now: datetime, *,
                    from_status: str = "active") -> None:
    """Withdraw vouchers (status ``void``); their places count no more against the campaigns' limits."""
    await repository.set_status(session, [v.id for v in vouchers], from_status=from_status, to_status="void",
                                at=now)
    for campaign_id, count in sorted(Counter(v.campaign_id for v in vouchers).items()):
        await repository.give_back(session, campaign_id, count)


async def withdraw_for_return(session: AsyncSession, transaction_id: str, spend_left: int,
                              now: datetime) -> list[str]:
    """A return: the unused vouchers the sale earned by its spend that its spend, after every return of it, no
    longer reaches (``rules.withdrawn_by_return``) are withdrawn, their places given back to the campaigns' limits;
    their codes. A voucher already used stays used (it is not a balance that can go below zero)."""
    earned = await _unused_earned(session, transaction_id)
    withdrawn = set(rules.withdrawn_by_return([(v.id, v.earned_threshold) for v in earned], spend_left))
    gone = [v for v in earned if v.id in withdrawn]
    await _withdraw(session, gone, now)
    return [v.code for v in gone]


async def offered(session: AsyncSession, member_id: str, now: datetime) -> list[rules.Voucher]:
    """The member's own vouchers the offers list, soonest-expiring first: active and not past their end, those
    not valid yet included (:func:`offers_for` tells them not applicable, with the day they start: a member is
    told of a voucher they hold, as ``GET /v1/members/{id}/vouchers`` lists it)."""
    rows = await repository.unexpired(session, member_id, now)
    campaigns = await _campaign_rules(session, {row.campaign_id for row in rows})
    return rules.soonest_expiring_first([_to_rules_voucher(row, campaigns[row.campaign_id]) for row in rows])


async def usable_public(session: AsyncSession, member_id: str, now: datetime) -> list[VoucherPublic]:
    """The member's vouchers usable now (started and not past their end) as the API shows them, soonest-expiring
    first (for the member summary). A voucher not valid yet is left out here; the offers list it, not
    applicable, with the day it starts."""
    rows = sorted(await repository.usable(session, member_id, now),
                  key=lambda v: rules.expiry_order(v.valid_until, v.code))
    return [voucher_public(v, now) for v in rows]


def offers_for(vouchers: Sequence[rules.Voucher], items: Sequence[rules.Item] | None, *, member_id: str,
               facts: rules.MemberFacts, now: datetime, currency: str, locale: str,
               timezone: str | None = None) -> list[VoucherOffer]:
    """Each held voucher (soonest-expiring first) valued against the basket's ``items`` on its own; without a
    basket (the app), applicable when the member can use it at all now (``rules.why_not_usable``: theirs, valid
    already, in its audience; a basket's spend and items are not known) and then worth its amount when it is
    one. A voucher that does not apply is worth 0 either way, with the reason. Words in the member's ``locale``,
    dates on the store's calendar (``timezone``; UTC without one)."""
    basket_net = sum(i.net for i in items or ())
    offers = []
    for voucher in vouchers:
        if items is not None:
            reason = rules.why_not(voucher, member_id=member_id, facts=facts, items=items, basket_net=basket_net,
                                   now=now, currency=currency, timezone=timezone)
            value = 0 if reason else rules.discount(voucher.campaign, items).total
        else:
            reason = rules.why_not_usable(voucher, member_id=member_id, facts=facts, now=now, timezone=timezone)
            amount_off = voucher.campaign.kind == rules.AMOUNT_OFF
            value = voucher.campaign.value or 0 if amount_off and reason is None else 0
        offer = _say(locale, voucher.campaign.describe(currency))
        if voucher.valid_until:
            offer = message(locale, "voucher_valid_until", offer=offer,
                            date=told_end(voucher.valid_until, timezone))
        offers.append(VoucherOffer(id=voucher.code, title=voucher.campaign.name, description=offer, value=value,
                                   applicable=reason is None, reason=None if reason is None else _say(locale, reason),
                                   expires_at=voucher.valid_until))
    return offers


def _say(locale: str, text: rules.Text) -> str:
    return message(locale, text.key, **text.values)


def expiring_soon(vouchers: Sequence[rules.Voucher], now: datetime) -> list[rules.Voucher]:
    """The held vouchers that end within a week (for nudges)."""
    return [v for v in rules.expiring_soon(vouchers, now) if v.valid_until]


async def member_vouchers(session: AsyncSession, member_id: str, now: datetime, *, after: str | None,
                          limit: int) -> list[VoucherPublic]:
    await members_service.get(session, member_id)
    return [voucher_public(v, now) for v in await repository.member_vouchers(session, member_id, after=after,
                                                                            limit=limit)]


async def lookup(session: AsyncSession, guard: ratelimit.Guard, code: str, now: datetime) -> VoucherDetail:
    """A voucher by its code. Unknown codes count against the caller's failed look-ups (404, then 429)."""
    [normalized] = await _screen_one(guard, code, now)
    [row] = await repository.by_codes(session, [normalized], lock=False)
    campaign = await _campaign(session, row.campaign_id)
    program = await program_service.get(session)
    public = voucher_public(row, now)
    return VoucherDetail(**public.model_dump(), title=campaign.name,
                         description=str(to_rules(campaign).describe(program.currency)),
                         min_spend=campaign.min_spend, stackable=campaign.stackable)


async def _screen_one(guard: ratelimit.Guard, code: str, now: datetime) -> list[str]:
    try:
        return await screen(guard, [code], now)
    except UnknownVoucher as exc:
        raise VoucherNotFound(exc.detail, **exc.extra) from exc


async def expire_vouchers(session: AsyncSession, as_of: datetime, now: datetime) -> int:
    """The sweep: active vouchers past their end become expired, but for those a till holds (left to the next
    sweep). Running again changes nothing more."""
    return await repository.expire(session, as_of, now)


async def issued_by_status(session: AsyncSession, start: datetime | None, end: datetime, now: datetime) -> list[Row]:
    """For the redemption report: ``(campaign id, name, status, past its end at now, count)`` of the vouchers
    issued in ``[start, end)``."""
    return await repository.issued_by_status(session, start, end, now)
