"""Reports that read across domains. Each domain counts its own rows (``ledger``, ``vouchers``, ``punchcards``);
this module puts the counts together with :mod:`service.reports.rules`. It writes nothing."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service.ledger import service as ledger_service
from service.punchcards import service as punchcards_service
from service.reports import rules
from service.reports.schemas import (
    CampaignRedemption,
    GiftCardRedemption,
    PointsRedemption,
    PunchProgramRedemption,
    PunchRewardRedemptions,
    RedemptionReport,
    VoucherRedemptions,
)
from service.vouchers import service as vouchers_service


def _cohort(cohort: rules.Cohort) -> dict:
    """The cohort's counts and its rate, as the public cohort's fields."""
    return {**asdict(cohort), "redemption_rate": cohort.redemption_rate}


async def redemptions(session: AsyncSession, start: datetime | None, end: datetime | None,
                      now: datetime) -> RedemptionReport:
    """Points issued, redeemed and expired in ``[start, end)``, gift card value issued and spent in it, and the
    vouchers and punch card rewards issued in it by where they stand ``now`` (``rules`` says how each figure is
    counted)."""
    start, end = rules.period(start, end, now)
    accounts = [*rules.POINTS_ACCOUNTS, *rules.GIFT_CARD_ACCOUNTS]
    net = await ledger_service.program_flows(session, accounts, start, end)
    flow, cards = rules.points_flow(net), rules.gift_card_flow(net)
    campaigns = await vouchers_service.issued_by_status(session, start, end, now)
    programs = await punchcards_service.issued_by_status(session, start, end, now)
    by_campaign, by_program = rules.cohorts(campaigns), rules.cohorts(programs)
    campaign_names, program_names = ({owner: name for owner, name, *_ in rows} for rows in (campaigns, programs))
    return RedemptionReport(
        period_from=start, period_to=end, as_of=now,
        points=PointsRedemption(issued=flow.issued, redeemed=flow.redeemed, expired=flow.expired,
                                adjusted=flow.adjusted, redemption_rate=flow.redemption_rate,
                                expiry_rate=flow.expiry_rate),
        gift_cards=GiftCardRedemption(issued=cards.issued, spent=cards.spent, redemption_rate=cards.redemption_rate),
        vouchers=VoucherRedemptions(
            **_cohort(rules.total(by_campaign.values())),
            campaigns=[CampaignRedemption(campaign_id=c, name=campaign_names[c], **_cohort(by_campaign[c]))
                       for c in sorted(by_campaign)]),
        punch_rewards=PunchRewardRedemptions(
            **_cohort(rules.total(by_program.values())),
            programs=[PunchProgramRedemption(program_id=p, name=program_names[p], **_cohort(by_program[p]))
                      for p in sorted(by_program)]),
    )
