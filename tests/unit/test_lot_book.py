"""Property: whatever sequence of earning, burning, clawing back, restoring and expiring happens, the points in
open lots equal ``max(balance, 0)`` and no lot holds less than nothing or more than it was given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from service.ledger import rules
from service.ledger.rules import LotPolicy, Movement

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OPS = st.lists(st.tuples(st.sampled_from(["earn", "burn", "clawback", "restore", "expire"]),
                         st.integers(1, 200), st.integers(0, 10**6)), max_size=60)


class Member:
    def __init__(self) -> None:
        self.balance = 0
        self.lots: dict[int, rules.Lot] = {}
        self.amounts: dict[int, int] = {}
        self.draws: list[tuple[int, str, int]] = []  # (lot, origin, amount)
        self.earns: list[str] = []
        self.burns: dict[str, int] = {}  # burn transaction -> points not yet restored
        self.seq = 0

    def post(self, movement: Movement) -> None:
        self.seq += 1
        txn = f"t{self.seq}"
        origins = [movement.origin] if movement.lots is LotPolicy.RESTORE and movement.origin else []
        outstanding = [(o, lot, n) for o, lot, n in self._outstanding(origins) if n > 0]
        book = rules.LotBook(dict(self.lots), outstanding=outstanding)
        book.apply(movement, self.balance)
        self.lots.update(book.lots)
        for draw in book.draws:
            self.draws.append((draw.lot_id, draw.origin or txn, draw.amount))
        for new in book.new_lots:
            lot_id = len(self.amounts) + 1
            self.amounts[lot_id] = new.amount
            self.lots[lot_id] = rules.Lot(lot_id, new.expires_at, new.amount, txn)
        self.balance += movement.amount
        if movement.kind == "earn":
            self.earns.append(txn)
        if movement.kind == "burn":
            self.burns[txn] = -movement.amount

    def _outstanding(self, origins: list[str]) -> list[tuple[str, int, int]]:
        sums: dict[tuple[str, int], int] = {}
        for lot, origin, amount in self.draws:
            if origin in origins:
                sums[(origin, lot)] = sums.get((origin, lot), 0) + amount
        return [(o, lot, n) for (o, lot), n in sorted(sums.items(), key=lambda kv: kv[0][1])]

    def check(self) -> None:
        assert sum(lot.remaining for lot in self.lots.values()) == max(self.balance, 0)
        assert all(0 <= lot.remaining <= self.amounts[lot.id] for lot in self.lots.values())


def points(amount: int, kind: str, policy: LotPolicy, **kw) -> Movement:
    return Movement("points", "points", amount, f"program:{kind}", kind, lots=policy, **kw)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_lots_always_hold_the_balance(ops):
    m = Member()
    for op, n, pick in ops:
        if op == "earn":
            expires = T0 + timedelta(days=pick % 400)
            m.post(points(n, "earn", LotPolicy.NEW, expires_at=expires))
        elif op == "burn" and m.balance > 0:
            m.post(points(-min(n, m.balance), "burn", LotPolicy.FIFO))
        elif op == "clawback" and m.earns:
            m.post(points(-n, "clawback", LotPolicy.CLAWBACK, allow_negative=True,
                          origin=m.earns[pick % len(m.earns)]))
        elif op == "restore" and any(m.burns.values()):
            open_burns = [t for t, left in m.burns.items() if left > 0]
            burn = open_burns[pick % len(open_burns)]
            amount = min(n, m.burns[burn])
            m.burns[burn] -= amount
            m.post(points(amount, "restore", LotPolicy.RESTORE, origin=burn))
        elif op == "expire":
            cutoff = T0 + timedelta(days=pick % 400)
            expired = [lot for lot in m.lots.values() if lot.remaining > 0 and lot.expires_at <= cutoff]
            if expired:
                m.post(points(-sum(lot.remaining for lot in expired), "expire", LotPolicy.SPECIFIC,
                              lot_ids=tuple(lot.id for lot in expired)))
        m.check()
