"""Punch-card decisions as pure functions: which units earn stamps, which unit a reward makes free, how many
rewards the stamps turn into, and what a return or void takes back.

Stamps live in the ledger (one account ``stamps:<program id>`` per member and program). A balance below zero
is a deficit (stamps returned after they were turned into a reward that was used); later stamps fill it first,
because rewards are only issued from a balance of at least ``stamps_required``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from service.ledger.rules import Movement

STAMPS_PREFIX = "stamps:"


def account_kind(program_id: str) -> str:
    """The member's ledger account (and asset) holding this program's stamps."""
    return f"{STAMPS_PREFIX}{program_id}"


def contra_account(program_id: str) -> str:
    """The program's side of every stamp movement."""
    return f"program:{STAMPS_PREFIX}{program_id}"


@dataclass(frozen=True, slots=True)
class Program:
    id: str
    name: str
    qualifying_skus: frozenset[str]
    qualifying_categories: frozenset[str]
    stamps_required: int
    reward_skus: frozenset[str] = frozenset()
    reward_categories: frozenset[str] = frozenset()
    max_value: int | None = None
    reward_valid_days: int = field(kw_only=True)  # how long an issued reward stays usable
    created_at: datetime | None = field(default=None, kw_only=True)  # None: as old as any sale (a test's program)

    def qualifies(self, sku: str, category: str) -> bool:
        return sku in self.qualifying_skus or category in self.qualifying_categories

    def reward_eligible(self, sku: str, category: str) -> bool:
        """A reward with no SKUs or categories of its own makes a qualifying item free."""
        if not self.reward_skus and not self.reward_categories:
            return self.qualifies(sku, category)
        return sku in self.reward_skus or category in self.reward_categories


@dataclass(frozen=True, slots=True)
class Terms:
    """What an issued reward makes free, fixed when it is issued: editing the programme later changes what later
    sales earn, never what was earned."""

    skus: frozenset[str]
    categories: frozenset[str]
    max_value: int | None


def terms_of(program: Program) -> Terms:
    """The terms of a reward the programme issues now: its reward items (its qualifying items when it names none)
    and its cap."""
    if not program.reward_skus and not program.reward_categories:
        return Terms(program.qualifying_skus, program.qualifying_categories, program.max_value)
    return Terms(program.reward_skus, program.reward_categories, program.max_value)


def as_issued(program: Program, terms: Terms) -> Program:
    """The programme as a reward issued under ``terms`` is redeemed: its items and cap as they were then. (Read
    from the programme as it stands, a cap lowered from 6.00 to 2.00 took 2.00 off a coffee a reward earned
    under 6.00 made free, and a reward moved from coffee to bakery refused the coffee; until 2026-12-08.)"""
    return replace(program, reward_skus=terms.skus, reward_categories=terms.categories, max_value=terms.max_value)


@dataclass(frozen=True, slots=True)
class Unit:
    """One line of the basket as the punch cards see it."""

    line_id: str
    sku: str
    category: str
    quantity: int
    unit_price: int


@dataclass(frozen=True, slots=True)
class Claim:
    reward_id: str
    program: Program


@dataclass(frozen=True, slots=True)
class Freed:
    reward_id: str
    line_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class FreeUnits:
    discounts: Mapping[str, int] = field(default_factory=dict)
    units: Mapping[str, int] = field(default_factory=dict)
    freed: tuple[Freed, ...] = ()


def free_units(lines: Sequence[Unit], claims: Sequence[Claim]) -> FreeUnits:
    """Each claimed reward makes the cheapest eligible unit not yet free in the basket free, up to the program's
    ``max_value``. A unit that costs nothing is not a candidate (the reward would be spent on nothing). A claim
    with no eligible unit left frees nothing; :func:`unusable_claims` names it.

    The claims choose in order of how few units they could take (then as the till listed them), so that a
    reward for anything hot does not take the coffee a coffee-only reward needed when a tea was there for it:
    taken in the till's order, the same two rewards on a coffee and a tea were refused or not by the order they
    were listed in (until 2026-12-08). ``freed`` lists them in the till's order."""
    eligible = [[line for line in lines if claim.program.reward_eligible(line.sku, line.category)
                 and line.unit_price > 0] for claim in claims]
    choosing = sorted(range(len(claims)), key=lambda i: (sum(ln.quantity for ln in eligible[i]), i))
    used: dict[str, int] = defaultdict(int)
    discounts: dict[str, int] = defaultdict(int)
    freed: list[tuple[int, Freed]] = []
    for index in choosing:
        claim = claims[index]
        candidates = [line for line in eligible[index] if used[line.line_id] < line.quantity]
        if not candidates:
            continue
        line = min(candidates, key=lambda ln: (ln.unit_price, ln.line_id))
        amount = line.unit_price if claim.program.max_value is None else min(line.unit_price, claim.program.max_value)
        used[line.line_id] += 1
        discounts[line.line_id] += amount
        freed.append((index, Freed(claim.reward_id, line.line_id, amount)))
    return FreeUnits(dict(discounts), dict(used), tuple(f for _, f in sorted(freed, key=lambda item: item[0])))


def unusable_claims(claims: Sequence[Claim], result: FreeUnits) -> list[Claim]:
    """The claims for which the basket had no eligible unit left."""
    done = {f.reward_id for f in result.freed}
    return [claim for claim in claims if claim.reward_id not in done]


def stamping(programs: Sequence[Program], lines: Sequence[tuple[str, str]], occurred_at: datetime) -> list[Program]:
    """The programs a sale of ``lines`` (``(sku, category)`` pairs) made at ``occurred_at`` stamps: those some line
    qualifies for that existed at the sale's time. A sale sent late or imported stamps as at its time, as it earns
    points and threshold vouchers: a programme started today is not filled by the member's purchases of last year."""
    return [p for p in programs if (p.created_at is None or p.created_at <= occurred_at)
            and any(p.qualifies(sku, category) for sku, category in lines)]


def stamps_earned(lines: Sequence[Unit], free: Mapping[str, int],
                  programs: Sequence[Program]) -> dict[str, dict[str, int]]:
    """``{program id: {line id: stamps}}``: one stamp per paid qualifying unit; a free unit (made free by a
    reward, or priced at nothing) earns none. One unit may stamp several programs."""
    earned: dict[str, dict[str, int]] = {}
    for program in programs:
        per_line = {line.line_id: line.quantity - free.get(line.line_id, 0) for line in lines
                    if program.qualifies(line.sku, line.category) and line.unit_price > 0
                    and line.quantity > free.get(line.line_id, 0)}
        if per_line:
            earned[program.id] = per_line
    return earned


# The most rewards of one programme a sale issues: a card of one stamp and a line of a million units would
# otherwise issue a million rewards (a row and an event each) inside the till's request. The stamps beyond stay on
# the card, and the member's next sales turn them into rewards.
MAX_REWARDS_PER_SALE = 50


def rewards_due(balance: int, earned: int, stamps_required: int) -> int:
    """Rewards issued when ``earned`` stamps join ``balance`` (a deficit is filled first), at most
    :data:`MAX_REWARDS_PER_SALE`; the rest carries over."""
    total = balance + earned
    return min(total // stamps_required, MAX_REWARDS_PER_SALE) if total >= stamps_required else 0


def stamps_to_remove(paid: int, returned_before: int, returned_now: int) -> int:
    """Stamps a return takes back from a line that earned ``paid`` stamps: returned units count as paid ones
    first, so the stamps removed over all returns never exceed what the line earned."""
    return min(returned_before + returned_now, paid) - min(returned_before, paid)


def rewards_to_revoke(balance_after: int, costs: Sequence[int]) -> int:
    """How many unused rewards a removal of stamps takes back: the first of ``costs`` (the stamps each unused
    reward cost when it was issued, in the order they are taken back) until the balance is back at zero or more,
    as far as there are unused rewards. What is left below zero is a deficit.

    Each reward gives back its own cost, not the programme's ``stamps_required`` now: a programme edited since
    would otherwise give back stamps nobody earned (raised) or leave a deficit after a sale undone whole
    (lowered)."""
    revoke = 0
    for cost in costs:
        if balance_after >= 0:
            break
        balance_after += cost
        revoke += 1
    return revoke


def missing_stamps(balance: int, stamps_required: int) -> int:
    """Stamps still to collect before the next reward. A card holding ``stamps_required`` or more (the programme
    was lowered below what the member holds, or a sale reached :data:`MAX_REWARDS_PER_SALE`) has its reward issued
    with the next sale that stamps it: one stamp is missing, not none."""
    return stamps_required - balance if balance < stamps_required else 1


def rewards_waiting(balance: int, stamps_required: int) -> int:
    """Rewards the stamps already on a card make but no sale has issued yet (see :func:`missing_stamps`): the next
    sale that stamps the card issues them, and any its own stamps make, up to :data:`MAX_REWARDS_PER_SALE`."""
    return rewards_due(balance, 0, stamps_required)


def stamp_movements(earned: Mapping[str, int], due: Mapping[str, int],
                    required: Mapping[str, int]) -> tuple[Movement, ...]:
    """Ledger movements of a commit: the stamps earned, then the stamps turned into rewards."""
    movements = []
    for program_id in sorted(earned):
        kind = account_kind(program_id)
        movements.append(Movement(account=kind, asset=kind, amount=earned[program_id],
                                  contra=contra_account(program_id), kind="earn"))
        if due.get(program_id):
            movements.append(Movement(account=kind, asset=kind, amount=-due[program_id] * required[program_id],
                                      contra=contra_account(program_id), kind="reward"))
    return tuple(movements)
