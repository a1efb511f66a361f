"""``loyalty verify``: every invariant of the ledger (DESIGN §3), and the receipts' and punch-card rewards'
agreement with it."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from service.checkout import repository as checkout_repository
from service.ledger import service as ledger_service
from service.ledger.service import VerifyReport


async def verify(session: AsyncSession, *, limit: int = 50) -> VerifyReport:
    """The ledger's own invariants (:func:`service.ledger.service.verify`), then each sale's points figures
    against what its ledger transaction moved (the figures its returns and voids reverse), and the stamps its
    punch-card rewards cost against what its ledger transaction turned into rewards."""
    report = await ledger_service.verify(session, limit=limit)
    problems = [f"sale {sale} says {earned} points earned and {burned} burned; its ledger transaction moved "
                f"{ledger_earned} and {ledger_burned}"
                for sale, earned, ledger_earned, burned, ledger_burned
                in await checkout_repository.receipts_off_their_ledger(session, limit)]
    problems += [f"sale {sale}'s rewards of {account} cost {cost} stamps; its ledger transaction turned {taken} "
                 "into rewards"
                 for sale, account, cost, taken in await checkout_repository.rewards_off_their_stamps(session, limit)]
    return replace(report, problems=report.problems + tuple(problems))
