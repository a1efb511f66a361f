from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.giftcards.models import GiftCard
from service.ledger.models import LedgerAccount
from service.ledger.rules import GIFT_CARD


async def by_codes(session: AsyncSession, codes: Sequence[str]) -> dict[str, GiftCard]:
    query = select(GiftCard).where(GiftCard.code.in_(list(codes)))
    return {card.code: card for card in (await session.execute(query)).scalars()}


async def add_all(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(GiftCard.__table__), list(rows))  # one executemany, whatever the count


async def balances(session: AsyncSession, gift_card_ids: Sequence[str]) -> dict[str, int]:
    """The cards' cached balances, read without a lock (for display, not for decisions)."""
    query = select(LedgerAccount.gift_card_id, LedgerAccount.balance).where(
        LedgerAccount.gift_card_id.in_(list(gift_card_ids)), LedgerAccount.kind == GIFT_CARD)
    return {card: int(balance or 0) for card, balance in (await session.execute(query)).all()}


async def outstanding(session: AsyncSession) -> tuple[int, int]:
    """``(total, count)`` of the gift cards that still hold money."""
    query = select(func.coalesce(func.sum(LedgerAccount.balance), 0), func.count()).where(
        LedgerAccount.kind == GIFT_CARD, LedgerAccount.gift_card_id.is_not(None), LedgerAccount.balance > 0)
    total, count = (await session.execute(query)).one()
    return int(total), int(count)
