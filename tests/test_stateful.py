"""A Hypothesis state machine drives the HTTP API and keeps an in-memory model of every balance beside it.

Steps: enroll, wallet top-up, points adjustment, quote, commit (earning points and stamps, burning points,
paying from the wallet), void, partial return, and the expiry sweep (``loyalty sweep --as-of`` a time past every
lot's and reward's expiry). After each step the member it touched must hold, in the service, what the model says
(points, wallet cash and bonus, stamps and unused rewards), every refusal must be the one the model predicts, and
after each run every ledger invariant (`loyalty verify`) holds.

The model is written from the documented rules (README "Points, the ledger and the checkout", "Punch cards",
"Stored value"), not from the service's code paths. It keeps each asset in its own small class so that another
asset (vouchers next) is one more class with ``commit`` / ``reverse`` hooks and one more comparison.

Baskets have one line (quantity 1-3) so that every figure has a short closed form; the program has one tier
(no tier multiplier or discount), earns 1 point per major unit, a point is worth 1 minor unit, top-ups of 50.00
or more get a 5.00 bonus, and one punch card (category ``coffee``) gives a reward every 3 stamps.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from math import floor

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, multiple, rule, run_state_machine_as_test

from service import cli
from tests.factories import verify_ledger
from tests.live import LiveApp, live_app

STORE = "stateful-store"
STAMPS_REQUIRED = 3
TOP_UP_BONUS = (5000, 500)  # a top-up of at least 5000 gets 500 bonus
EXAMPLES = int(os.environ.get("LOYALTY_STATEFUL_EXAMPLES", "12"))
STEPS = int(os.environ.get("LOYALTY_STATEFUL_STEPS", "30"))
_seq = itertools.count(1)


def half_up(value: Fraction) -> int:
    """Round half up (every figure rounded here is at least zero)."""
    return floor(value + Fraction(1, 2))


def split(amount: int, cash: int, bonus: int) -> tuple[int, int]:
    """The wallet's rule: ``amount`` from cash and bonus in proportion to their balances, each share rounded half
    up, the off-by-one corrected on the share whose exact value was nearest to rounding the other way (ties:
    cash)."""
    total = cash + bonus
    if amount == 0 or total == 0:
        return 0, 0
    exact = [Fraction(amount * cash, total), Fraction(amount * bonus, total)]
    shares = [min(half_up(exact[0]), cash), min(half_up(exact[1]), bonus)]
    diff = amount - sum(shares)
    weights = [cash, bonus]
    if diff > 0:
        for i in sorted((0, 1), key=lambda i: (shares[i] - exact[i], i)):
            room = min(weights[i] - shares[i], diff)
            shares[i], diff = shares[i] + room, diff - room
    elif diff < 0:
        for i in sorted((0, 1), key=lambda i: (exact[i] - shares[i], i)):
            room = min(shares[i], -diff)
            shares[i], diff = shares[i] - room, diff + room
    return shares[0], shares[1]


class Refused(Exception):
    """The model's prediction that the service refuses a request: status and problem code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code = status, code


# --- the model: one class per asset -----------------------------------------------------------------------


@dataclass
class Points:
    balance: int = 0

    def adjust(self, amount: int) -> None:
        if amount < 0 and self.balance + amount < 0:  # a debt comes only from returns of spent points
            raise Refused(409, "insufficient_points")
        self.balance += amount

    def check_burn(self, points: int, subtotal: int) -> None:
        if points and (self.balance < 0 or points > self.balance):
            raise Refused(409, "insufficient_points")
        if points > subtotal:  # max_burn_percent 100, point_value 1
            raise Refused(422, "points_over_limit")

    def expire(self) -> None:  # a sweep past every lot's expiry: open lots hold max(balance, 0)
        self.balance = min(self.balance, 0)


@dataclass
class Wallet:
    cash: int = 0
    bonus: int = 0

    def top_up(self, amount: int) -> None:
        self.cash += amount
        self.bonus += TOP_UP_BONUS[1] if amount >= TOP_UP_BONUS[0] else 0

    def check_pay(self, amount: int, payable: int) -> None:
        if amount > payable:
            raise Refused(422, "wallet_exceeds_payable")
        if amount > self.cash + self.bonus:
            raise Refused(409, "insufficient_funds")


@dataclass
class Stamps:
    balance: int = 0
    rewards: int = 0  # unused and unexpired

    def add(self, stamps: int) -> None:
        total = self.balance + stamps
        due = total // STAMPS_REQUIRED if total >= STAMPS_REQUIRED else 0
        self.balance, self.rewards = total - due * STAMPS_REQUIRED, self.rewards + due

    def remove(self, stamps: int) -> None:
        after = self.balance - stamps
        revoke = min(-(after // STAMPS_REQUIRED), self.rewards) if after < 0 else 0
        self.balance, self.rewards = after + revoke * STAMPS_REQUIRED, self.rewards - revoke

    def expire(self) -> None:
        self.rewards = 0


@dataclass
class Member:
    id: str
    points: Points = field(default_factory=Points)
    wallet: Wallet = field(default_factory=Wallet)
    stamps: Stamps = field(default_factory=Stamps)


@dataclass
class Sale:
    """A committed sale of one line and what its returns have reversed so far."""

    id: str
    member: Member
    quantity: int
    subtotal: int
    coffee: bool
    burned: int
    paid: tuple[int, int]  # wallet (cash, bonus)
    status: str = "committed"
    returned: int = 0
    clawed: int = 0
    refunded: int = 0
    spend_back: int = 0
    wallet_back: tuple[int, int] = (0, 0)

    @property
    def net(self) -> int:
        return self.subtotal - self.burned

    @property
    def earned(self) -> int:
        return floor(Fraction(self.net, 100))

    @property
    def stamps(self) -> int:
        return self.quantity if self.coffee else 0

    def return_units(self, units: int) -> None:
        """Cumulative figures for everything returned so far; this return takes the difference (earned points
        round down, burned points and spend half up, the wallet share half up, split as the payment was)."""
        if self.status not in ("committed", "partially_returned"):
            raise Refused(409, "transaction_not_returnable")
        if units > self.quantity - self.returned:
            raise Refused(422, "return_exceeds_purchase")
        after = self.returned + units
        fully = after == self.quantity
        ratio = Fraction(after, self.quantity)
        earned = self.earned if fully else min(floor(Fraction(self.net, 100) * ratio), self.earned)
        burned = self.burned if fully else min(half_up(self.burned * ratio), self.burned)
        spend = self.net if fully else half_up(self.net * ratio)
        paid_total = sum(self.paid)
        wallet_total = paid_total if fully or not paid_total else min(half_up(Fraction(paid_total * spend, self.net)),
                                                                      paid_total)
        cum = split(wallet_total, *self.paid)
        back = (max(cum[0] - self.wallet_back[0], 0), max(cum[1] - self.wallet_back[1], 0))
        m = self.member
        m.points.balance += -(earned - self.clawed) + (burned - self.refunded)
        m.wallet.cash, m.wallet.bonus = m.wallet.cash + back[0], m.wallet.bonus + back[1]
        m.stamps.remove(min(after, self.stamps) - min(self.returned, self.stamps))
        self.clawed, self.refunded, self.spend_back = earned, burned, spend
        self.wallet_back = (self.wallet_back[0] + back[0], self.wallet_back[1] + back[1])
        self.returned, self.status = after, "returned" if fully else "partially_returned"

    def void(self) -> None:
        """Everything the sale and its returns still hold goes back."""
        if self.status in ("voided", "returned"):
            raise Refused(409, "transaction_not_voidable")
        m = self.member
        m.points.balance += -(self.earned - self.clawed) + (self.burned - self.refunded)
        m.wallet.cash += self.paid[0] - self.wallet_back[0]
        m.wallet.bonus += self.paid[1] - self.wallet_back[1]
        m.stamps.remove(self.stamps - min(self.returned, self.stamps))
        self.status = "voided"


# --- the machine ----------------------------------------------------------------------------------------------


class LoyaltyMachine(RuleBasedStateMachine):
    live: LiveApp  # set by the test
    punch_program: str

    members = Bundle("members")
    sales = Bundle("sales")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Member] = {}
        self.sales_by_id: dict[str, Sale] = {}

    # helpers
    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        if method == "POST":
            kwargs.setdefault("headers", {})["Idempotency-Key"] = f"sm-{next(_seq)}"
        return self.live.request(method, path, **kwargs)

    def expect_refusal(self, r: httpx.Response, refused: Refused) -> None:
        assert (r.status_code, r.json().get("code")) == (refused.status, refused.code), r.text

    def check(self, member: Member) -> None:
        points = self.call("GET", f"/v1/members/{member.id}/points").json()
        wallet = self.call("GET", f"/v1/members/{member.id}/wallet").json()
        cards = {c["program_id"]: c for c in self.call("GET", f"/v1/members/{member.id}/punch-cards").json()}
        card = cards.get(self.punch_program, {"stamps": 0, "rewards": []})
        service = (points["balance"], wallet["cash"], wallet["bonus"], card["stamps"],
                   sum(1 for r in card["rewards"] if r["status"] == "available"))
        model = (member.points.balance, member.wallet.cash, member.wallet.bonus, member.stamps.balance,
                 member.stamps.rewards)
        assert service == model, f"member {member.id}: service (points, cash, bonus, stamps, rewards) {service} " \
                                 f"!= model {model}"

    # rules
    @initialize(target=members)
    def enroll_with_balances(self) -> Member:
        member = self.enroll()
        self.top_up(member, 12_000)
        self.adjust(member, 2_000)
        return member

    @rule(target=members)
    def enroll(self) -> Member:
        r = self.call("POST", "/v1/members", json={"name": "Model Member"})
        assert r.status_code == 201, r.text
        member = Member(r.json()["id"])
        self.model[member.id] = member
        self.check(member)
        return member

    @rule(member=members, amount=st.sampled_from([1, 999, 2500, 4999, 5000, 12_000]))
    def top_up(self, member: Member, amount: int) -> None:
        r = self.call("POST", f"/v1/members/{member.id}/wallet/top-ups", json={"amount": amount, "payment_ref": "sm"})
        assert r.status_code == 201, r.text
        member.wallet.top_up(amount)
        self.check(member)

    @rule(member=members, amount=st.integers(-3000, 3000).filter(bool))
    def adjust(self, member: Member, amount: int) -> None:
        r = self.call("POST", f"/v1/members/{member.id}/points/adjustments", json={"amount": amount, "reason": "sm"})
        try:
            member.points.adjust(amount)
        except Refused as refused:
            self.expect_refusal(r, refused)
        else:
            assert r.status_code == 201, r.text
        self.check(member)

    def _basket(self, member: Member, quantity: int, unit_price: int, coffee: bool, points: int,
                wallet: int) -> dict:
        redeem = {k: v for k, v in (("points", points), ("wallet_amount", wallet)) if v}
        return {"member": {"member_id": member.id}, "store_id": STORE, "currency": "USD",
                "lines": [{"line_id": "1", "sku": "COFFEE" if coffee else "BREAD",
                           "category": "coffee" if coffee else "bakery", "quantity": quantity,
                           "unit_price": unit_price}], **({"redeem": redeem} if redeem else {})}

    def _predict(self, member: Member, quantity: int, unit_price: int, points: int, wallet: int) -> int:
        subtotal = quantity * unit_price
        member.points.check_burn(points, subtotal)
        member.wallet.check_pay(wallet, subtotal - points)
        return subtotal

    # Redemptions are drawn as shares of what the member holds (so that most commits succeed) or as a fixed
    # amount (often too much: the refusals are predicted too).
    share = st.one_of(st.sampled_from([Fraction(0), Fraction(0), Fraction(1, 3), Fraction(1)]),
                      st.sampled_from([1, 77, 5000]))
    basket_args = {"quantity": st.integers(1, 3), "unit_price": st.sampled_from([0, 1, 99, 150, 450, 1000, 3333]),
                   "coffee": st.booleans(), "points": share, "wallet": share}

    @staticmethod
    def _amount(share: Fraction | int, held: int) -> int:
        return floor(max(held, 0) * share) if isinstance(share, Fraction) else share

    @rule(member=members, **basket_args)
    def quote(self, member: Member, quantity: int, unit_price: int, coffee: bool, points, wallet) -> None:
        points = self._amount(points, member.points.balance)
        wallet = self._amount(wallet, min(member.wallet.cash + member.wallet.bonus, quantity * unit_price - points))
        r = self.call("POST", "/v1/checkout/quote",
                      json=self._basket(member, quantity, unit_price, coffee, points, wallet))
        try:
            subtotal = self._predict(member, quantity, unit_price, points, wallet)
        except Refused as refused:
            self.expect_refusal(r, refused)
            return
        assert r.status_code == 200, r.text
        quote = r.json()
        assert quote["totals"]["net"] == subtotal - points and quote["totals"]["payable"] == subtotal - points - wallet
        assert quote["earn"]["points"] == floor(Fraction(subtotal - points, 100))
        assert quote["balances"]["points"] == member.points.balance

    @rule(target=sales, member=members, **basket_args)
    def commit(self, member: Member, quantity: int, unit_price: int, coffee: bool, points, wallet):
        points = self._amount(points, min(member.points.balance, quantity * unit_price))
        wallet = self._amount(wallet, min(member.wallet.cash + member.wallet.bonus, quantity * unit_price - points))
        body = {**self._basket(member, quantity, unit_price, coffee, points, wallet), "receipt_id": f"sm-{next(_seq)}"}
        r = self.call("POST", "/v1/checkout/transactions", json=body)
        try:
            subtotal = self._predict(member, quantity, unit_price, points, wallet)
        except Refused as refused:
            self.expect_refusal(r, refused)
            self.check(member)
            return multiple()  # no sale to remember
        assert r.status_code == 201, r.text
        paid = split(wallet, member.wallet.cash, member.wallet.bonus)
        sale = Sale(r.json()["id"], member, quantity, subtotal, coffee, points, paid)
        member.points.balance += sale.earned - points
        member.wallet.cash, member.wallet.bonus = member.wallet.cash - paid[0], member.wallet.bonus - paid[1]
        member.stamps.add(sale.stamps)
        assert r.json()["earned"]["points"] == sale.earned
        assert r.json()["balances_after"]["points"] == member.points.balance
        self.check(member)
        return sale

    @rule(sale=sales)
    def void(self, sale: Sale) -> None:
        r = self.call("POST", f"/v1/checkout/transactions/{sale.id}/void")
        try:
            sale.void()
        except Refused as refused:
            self.expect_refusal(r, refused)
        else:
            assert r.status_code == 200 and r.json()["status"] == "voided", r.text
        self.check(sale.member)

    @rule(sale=sales, units=st.integers(1, 3))
    def return_units(self, sale: Sale, units: int) -> None:
        r = self.call("POST", f"/v1/checkout/transactions/{sale.id}/returns",
                      json={"lines": [{"line_id": "1", "quantity": units}]})
        try:
            sale.return_units(units)
        except Refused as refused:
            self.expect_refusal(r, refused)
        else:
            assert r.status_code == 201, r.text
        self.check(sale.member)

    @rule()
    def sweep(self) -> None:
        as_of = (self.live.clock.now() + timedelta(days=400)).isoformat()
        assert cli.main(["sweep", "--as-of", as_of]) == 0
        for member in self.model.values():
            member.points.expire()
            member.stamps.expire()
            self.check(member)

    def teardown(self) -> None:
        for member in self.model.values():
            self.check(member)
        self.live.run(verify_ledger(self.live.app))


def test_any_sequence_keeps_service_equal_to_model(database_url: str, table_names: list[str], cli_env) -> None:
    with live_app(database_url, table_names) as live:
        setup(live)
        LoyaltyMachine.live = live
        run_state_machine_as_test(LoyaltyMachine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
            derandomize=os.environ.get("LOYALTY_STATEFUL_RANDOM") != "1",
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    assert cli.main(["verify"]) == 0


def setup(live: LiveApp) -> None:
    """One store, the program described in the module docstring, one punch card programme."""
    r = live.request("POST", "/v1/stores", json={"id": STORE, "name": "Model", "timezone": "UTC"})
    assert r.status_code == 201, r.text
    program = live.request("GET", "/v1/program").json()
    program.update(tiers=program["tiers"][:1], max_burn_percent=100, point_value=1, points_expiry_months=12,
                   wallet_top_up_bonuses=[{"min_amount": TOP_UP_BONUS[0], "bonus": TOP_UP_BONUS[1]}])
    program["earn"].update(base_rate_per_major_unit=1, category_multipliers={}, sku_multipliers={}, bonus_events=[])
    r = live.request("PUT", "/v1/program", json=program)
    assert r.status_code == 200, r.text
    r = live.request("POST", "/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"skus": [], "categories": ["coffee"]},
        "stamps_required": STAMPS_REQUIRED, "reward": {"skus": [], "categories": ["coffee"], "max_value": 1000},
        "reward_valid_days": 30, "active": True})
    assert r.status_code == 201, r.text
    LoyaltyMachine.punch_program = r.json()["id"]
