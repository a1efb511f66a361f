from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.referrals.models import ReferralReward


async def get(session: AsyncSession, referee_id: str) -> ReferralReward | None:
    return await session.get(ReferralReward, referee_id)


def add(session: AsyncSession, row: ReferralReward) -> None:
    session.add(row)


async def rewarded_by(session: AsyncSession, transaction_id: str) -> ReferralReward | None:
    return await session.scalar(select(ReferralReward).where(ReferralReward.transaction_id == transaction_id,
                                                             ReferralReward.status == "rewarded"))
