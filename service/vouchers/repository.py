from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import fetch, one_of, prebuilt, prefetch
from service.vouchers.models import Voucher, VoucherCampaign


async def get_campaign(session: AsyncSession, campaign_id: str, *, lock: bool = False) -> VoucherCampaign | None:
    """The campaign; with ``lock``, read as committed now and locked for update (issuing waits for it)."""
    if lock:
        return await session.get(VoucherCampaign, campaign_id, with_for_update=True, populate_existing=True)
    return await session.get(VoucherCampaign, campaign_id)


async def list_campaigns(session: AsyncSession, *, after: str | None, limit: int) -> list[VoucherCampaign]:
    query = select(VoucherCampaign).order_by(VoucherCampaign.id).limit(limit)
    if after:
        query = query.where(VoucherCampaign.id > after)
    return list((await session.execute(query)).scalars())


async def auto_issue_campaigns(session: AsyncSession) -> list[VoucherCampaign]:
    query = (select(VoucherCampaign)
             .where(VoucherCampaign.active.is_(True), VoucherCampaign.auto_issue_spend_threshold.is_not(None))
             .order_by(VoucherCampaign.id))
    return list((await session.execute(query)).scalars())


async def reserve(session: AsyncSession, campaign_id: str, count: int) -> bool:
    """Count ``count`` more vouchers against the campaign unless that passes its ``total_limit``. The update
    holds the campaign's row lock until the transaction ends: issuers of one campaign run one after another
    (PostgreSQL re-checks the condition on the row a concurrent issuer just committed; SQLite has one writer)."""
    result = await session.execute(
        update(VoucherCampaign)
        .where(VoucherCampaign.id == campaign_id,
               (VoucherCampaign.total_limit.is_(None))
               | (VoucherCampaign.issued_count + count <= VoucherCampaign.total_limit))
        .values(issued_count=VoucherCampaign.issued_count + count)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


async def give_back(session: AsyncSession, campaign_id: str, count: int) -> None:
    await session.execute(
        update(VoucherCampaign).where(VoucherCampaign.id == campaign_id)
        .values(issued_count=VoucherCampaign.issued_count - count).execution_options(synchronize_session=False))


async def held_by_member(session: AsyncSession, campaign_id: str, member_id: str) -> int:
    """Vouchers of the campaign the member holds or used (revoked ones do not count)."""
    query = select(func.count()).select_from(Voucher).where(
        Voucher.member_id == member_id, Voucher.campaign_id == campaign_id, Voucher.status != "void")
    return int((await session.execute(query)).scalar_one())


async def held_counts(session: AsyncSession, member_id: str, campaign_ids: Sequence[str], *,
                      lock: bool) -> dict[str, int]:
    """Vouchers of each campaign the member holds or used (revoked ones do not count). ``lock``: first lock the
    campaigns' rows, as issuers do, so that no concurrent issue to the member changes the counts."""
    if not campaign_ids:
        return {}
    if lock:
        await session.execute(select(VoucherCampaign.id).where(VoucherCampaign.id.in_(list(campaign_ids)))
                              .order_by(VoucherCampaign.id).with_for_update())
    query = (select(Voucher.campaign_id, func.count()).where(
        Voucher.member_id == member_id, Voucher.campaign_id.in_(list(campaign_ids)), Voucher.status != "void")
        .group_by(Voucher.campaign_id))
    return {campaign_id: int(n) for campaign_id, n in (await session.execute(query)).all()}


async def insert_vouchers(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> bool:
    """Insert all rows (in multi-row statements of up to a thousand rows) or none: False when a unique code or id
    collided, and nothing was written."""
    try:
        async with session.begin_nested():
            await session.execute(insert(Voucher).returning(Voucher.id), list(rows))
    except IntegrityError:
        return False
    return True


# The checkout's reads (a quote or a commit naming codes, the offers' usable vouchers): built once, run without
# the ORM (``db.fetch``); their rows read as the ORM's objects do (``row.code``, ``row.valid_until``).
_VOUCHER = Voucher.__table__.c
_BY_CODES = prebuilt(lambda insert: select(*_VOUCHER).where(one_of(insert, _VOUCHER.code, "p_codes"))
                     .order_by(_VOUCHER.id))
_BY_CODES_LOCKED = prebuilt(lambda insert: select(*_VOUCHER).where(one_of(insert, _VOUCHER.code, "p_codes"))
                            .order_by(_VOUCHER.id).with_for_update())
_EXISTING_CODES = prebuilt(lambda insert: select(_VOUCHER.code).where(one_of(insert, _VOUCHER.code, "p_codes")))
# The offers list a voucher not valid yet (with the day it starts); "usable" (the summary) means valid now.
_UNEXPIRED = prebuilt(lambda _: select(*_VOUCHER).where(
    _VOUCHER.member_id == bindparam("p_member_id"), _VOUCHER.status == "active",
    (_VOUCHER.valid_until.is_(None)) | (_VOUCHER.valid_until > bindparam("p_now"))))
_USABLE = prebuilt(lambda _: select(*_VOUCHER).where(
    _VOUCHER.member_id == bindparam("p_member_id"), _VOUCHER.status == "active",
    (_VOUCHER.valid_from.is_(None)) | (_VOUCHER.valid_from <= bindparam("p_now")),
    (_VOUCHER.valid_until.is_(None)) | (_VOUCHER.valid_until > bindparam("p_now"))))


async def by_codes(session: AsyncSession, codes: Sequence[str], *, lock: bool) -> list[Row]:
    """The vouchers with these codes (every column), in id order; ``lock``: locked until the transaction ends."""
    statement = _BY_CODES_LOCKED if lock else _BY_CODES
    return await fetch(session, statement(session), {"p_codes": list(codes)})


def prefetch_by_codes(session: AsyncSession, codes: Sequence[str]) -> None:
    """Announce :func:`by_codes`' read without the lock (``db.prefetch``)."""
    prefetch(session, _BY_CODES(session), {"p_codes": list(codes)})


def prefetch_existing_codes(session: AsyncSession, codes: Sequence[str]) -> None:
    """Announce :func:`existing_codes`' read (``db.prefetch``)."""
    prefetch(session, _EXISTING_CODES(session), {"p_codes": list(codes)})


async def existing_codes(session: AsyncSession, codes: Sequence[str]) -> set[str]:
    return {row.code for row in await fetch(session, _EXISTING_CODES(session), {"p_codes": list(codes)})}


async def member_vouchers(session: AsyncSession, member_id: str, *, after: str | None,
                          limit: int) -> list[Voucher]:
    query = select(Voucher).where(Voucher.member_id == member_id).order_by(Voucher.id).limit(limit)
    if after:
        query = query.where(Voucher.id > after)
    return list((await session.execute(query)).scalars())


async def unexpired(session: AsyncSession, member_id: str, now: datetime) -> list[Row]:
    """The member's active vouchers not yet past their end, those not valid yet included (every column)."""
    return await fetch(session, _UNEXPIRED(session), {"p_member_id": member_id, "p_now": now})


def prefetch_unexpired(session: AsyncSession, member_id: str, now: datetime) -> None:
    """Announce :func:`unexpired`'s read (``db.prefetch``)."""
    prefetch(session, _UNEXPIRED(session), {"p_member_id": member_id, "p_now": now})


async def usable(session: AsyncSession, member_id: str, now: datetime) -> list[Row]:
    """The member's active vouchers valid now: started (``valid_from``) and not past their end (every column)."""
    return await fetch(session, _USABLE(session), {"p_member_id": member_id, "p_now": now})


async def set_status(session: AsyncSession, ids: Sequence[str], *, from_status: str, to_status: str, at: datetime,
                     **values: Any) -> int:
    """Move vouchers from one status to another; only rows still in ``from_status`` change (the count says how
    many did), so two writers can never both move the same voucher."""
    if not ids:
        return 0
    result = await session.execute(
        update(Voucher).where(Voucher.id.in_(list(ids)), Voucher.status == from_status)
        .values(status=to_status, changed_at=at, **values).execution_options(synchronize_session=False))
    return result.rowcount


async def claim_bearer(session: AsyncSession, ids: Sequence[str], member_id: str) -> None:
    """Bearer codes a member redeemed become the member's."""
    if ids:
        await session.execute(update(Voucher).where(Voucher.id.in_(list(ids)), Voucher.member_id.is_(None))
                              .values(member_id=member_id).execution_options(synchronize_session=False))


async def issued_by(session: AsyncSession, transaction_id: str, *, lock: bool = False) -> list[Voucher]:
    query = select(Voucher).where(Voucher.issued_by == transaction_id).order_by(Voucher.id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return list((await session.execute(query)).scalars())


async def redeemed_by(session: AsyncSession, transaction_id: str) -> list[Voucher]:
    query = (select(Voucher).where(Voucher.redeemed_by == transaction_id, Voucher.status == "redeemed")
             .order_by(Voucher.id).with_for_update().execution_options(populate_existing=True))
    return list((await session.execute(query)).scalars())


async def expire(session: AsyncSession, as_of: datetime, now: datetime) -> int:
    """Active vouchers past their end become expired, except those another transaction holds (a till redeeming or
    a void withdrawing them), which the next sweep expires: the sweep never waits for a till, so a till locking
    several of them in its order and the sweep in its own cannot deadlock."""
    due = (select(Voucher.id).where(Voucher.status == "active", Voucher.valid_until <= as_of)
           .order_by(Voucher.id).with_for_update(skip_locked=True))
    result = await session.execute(
        update(Voucher).where(Voucher.id.in_(due.scalar_subquery()))
        .values(status="expired", changed_at=now).execution_options(synchronize_session=False))
    return result.rowcount


async def issued_by_status(session: AsyncSession, start: datetime | None, end: datetime,
                           now: datetime) -> list[Row]:
    """``(campaign_id, name, status, past its end at now, count)`` of the vouchers issued in ``[start, end)`` (a
    report's read: it scans the vouchers)."""
    past_end = func.coalesce(Voucher.valid_until <= now, False).label("past_end")
    query = (select(Voucher.campaign_id, VoucherCampaign.name, Voucher.status, past_end, func.count())
             .join(VoucherCampaign, VoucherCampaign.id == Voucher.campaign_id)
             .where(Voucher.issued_at < end)
             .group_by(Voucher.campaign_id, VoucherCampaign.name, Voucher.status, past_end))
    if start is not None:
        query = query.where(Voucher.issued_at >= start)
    return list((await session.execute(query)).all())
