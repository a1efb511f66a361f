from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.ledger.models import LedgerAccount


async def held_by_kind(session: AsyncSession, kinds: list[str]) -> dict[str, int]:
    """``{kind: sum of the positive member balances}`` over every member account of these kinds."""
    positive = case((LedgerAccount.balance > 0, LedgerAccount.balance), else_=0)
    query = (select(LedgerAccount.kind, func.coalesce(func.sum(positive), 0))
             .where(LedgerAccount.member_id.is_not(None), LedgerAccount.kind.in_(kinds))
             .group_by(LedgerAccount.kind))
    return {kind: int(total) for kind, total in (await session.execute(query)).all()}
