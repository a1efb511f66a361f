"""What an import decides without the database: the order a member's purchases go in, which are still to
commit, how a bad line is described, and the tally the command prints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from service.imports.schemas import ImportPurchase

# The import refreshes the database's statistics when the members it has imported reach this count, and again at
# each doubling (``repository.refresh_statistics``): 7 times for 25,000 members.
FIRST_ANALYZE = 200


# Members imported in one transaction: a transaction's BEGIN, COMMIT and flush of the log cost as much as a
# member's history (about three purchases in CDNOW's). A batch with a refused line is rolled back, and its members
# go in one transaction each, so that only that line fails.
MEMBERS_PER_TRANSACTION = 8


def in_order(purchases: Iterable[ImportPurchase]) -> list[ImportPurchase]:
    """Oldest first (a stable sort: purchases at the same time keep the file's order). Tiers, segments and
    threshold vouchers then see the history as it happened."""
    return sorted(purchases, key=lambda p: p.occurred_at)


def pending(purchases: Sequence[ImportPurchase], committed: set[tuple[str, str]]) -> list[ImportPurchase]:
    """The purchases whose receipts the member does not have yet: what a second run of the same file commits."""
    return [p for p in purchases if (p.store_id, p.receipt_id) not in committed]


def describe(error: ValidationError) -> str:
    """A bad line's problems, one clause each, named by where they are (``purchases.0.lines.1.quantity``)."""
    return "; ".join(f"{'.'.join(str(part) for part in problem['loc']) or 'line'}: {problem['msg']}"
                     for problem in error.errors(include_url=False))


def not_utf8(error: UnicodeDecodeError) -> str:
    """A line that is not UTF-8, named by its first bad byte (a file saved as Latin-1 or Windows-1252 shows its
    first accented letter here)."""
    return (f"not UTF-8: byte 0x{error.object[error.start]:02x} at column {error.start + 1}; save the file as "
            "UTF-8 and run it again")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What importing one member did."""

    enrolled: bool
    committed: int
    skipped: int


@dataclass(frozen=True, slots=True)
class Failure:
    line: int
    external_ref: str | None
    detail: str

    def __str__(self) -> str:
        who = f" ({self.external_ref})" if self.external_ref else ""
        return f"line {self.line}{who}: {self.detail}"


@dataclass(slots=True)
class Tally:
    enrolled: int = 0
    found: int = 0
    committed: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def members(self) -> int:
        return self.enrolled + self.found

    def add(self, outcome: Outcome) -> None:
        if outcome.enrolled:
            self.enrolled += 1
        else:
            self.found += 1
        self.committed += outcome.committed
        self.skipped += outcome.skipped

    @classmethod
    def merged(cls, tallies: Iterable[Tally]) -> Tally:
        """The tallies of several jobs as one, failures in line order."""
        total = cls()
        for tally in tallies:
            total.enrolled, total.found = total.enrolled + tally.enrolled, total.found + tally.found
            total.committed, total.skipped = total.committed + tally.committed, total.skipped + tally.skipped
            total.failures.extend(tally.failures)
        total.failures.sort(key=lambda failure: failure.line)
        return total

    def summary(self, seconds: float) -> list[str]:
        rate = self.committed / seconds if seconds > 0 else 0.0
        return [
            f"import: {self.members:,} members ({self.enrolled:,} enrolled, {self.found:,} already "
            f"there), {self.committed:,} purchases committed, {self.skipped:,} already committed",
            f"import: {seconds:.1f} s, {rate:,.0f} purchases/s",
            f"import: {len(self.failures):,} lines failed" + (
                "; nothing of them was written: fix them and run the same file again" if self.failures else ""),
        ]
