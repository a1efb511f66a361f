"""A Hypothesis state machine drives the HTTP API and keeps an in-memory model of every balance beside it.

Steps: enroll, wallet top-up, points adjustment, targeted voucher issue, gift card issue, quote, commit (redeeming
vouchers, earning points, stamps and threshold vouchers, burning points, paying from the wallet and with a gift
card), void, partial return (with a slip number; sent again with it, it is refused and nothing moves), the clock
moving a few days on, and the expiry sweep (``loyalty sweep --as-of`` a time past every lot's, reward's and
voucher's end). After each step the member it touched must hold, in the
service, what the model says (points, wallet cash and bonus, stamps and unused rewards, and each voucher's status),
so must the gift card it touched (balance and status), every discount and refusal must be the one the model
predicts, and after each run every ledger invariant (`loyalty verify`) holds.

Points are kept in lots, as the service keeps them, so that the model knows what the sweep took from each sale's
lot: a return or void after a sweep claws back only what did not expire.

The model is written from the documented rules (README "Points, the ledger and the checkout", "Punch cards",
"Vouchers", "Stored value", "Gift cards"), not from the service's code paths. It keeps each asset in its own
small class.

Baskets have one line (quantity 1-3) so that every figure has a short closed form; the program has one tier
(no tier multiplier or discount), earns 1 point per major unit, a point is worth 1 minor unit, top-ups of 50.00
or more get a 5.00 bonus, and one punch card (category ``coffee``) gives a reward every 3 stamps. The voucher
campaigns are in :data:`CAMPAIGNS`. The clock moves at most :data:`MAX_DAYS` days in a run, so that vouchers
expire by the clock while no punch reward (30 days) or points lot (12 months) does.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from math import floor

import httpx
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from service import cli
from tests.factories import held, points_outstanding, verify_ledger
from tests.live import LiveApp, live_app
from tests.reference import half_up, shares

STORE = "stateful-store"
STAMPS_REQUIRED = 3
TOP_UP_BONUS = (5000, 500)  # a top-up of at least 5000 gets 500 bonus
MAX_DAYS = 27  # the clock moves at most this far in a run: punch rewards last 30 days
EXAMPLES = int(os.environ.get("LOYALTY_STATEFUL_EXAMPLES", "12"))
STEPS = int(os.environ.get("LOYALTY_STATEFUL_STEPS", "30"))
_seq = itertools.count(1)



def split(amount: int, cash: int, bonus: int) -> tuple[int, int]:
    """The wallet's rule: ``amount`` from cash and bonus in proportion to their balances (ties: cash)."""
    cash_part, bonus_part = shares(amount, cash, bonus)
    return cash_part, bonus_part


class Refused(Exception):
    """The model's prediction that the service refuses a request: status and problem code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code = status, code


# --- the model: one class per asset -----------------------------------------------------------------------


@dataclass(eq=False)
class Lot:
    origin: str  # the sale or adjustment that created it
    remaining: int
    expires: bool = True  # burned points given back beyond the lots they came from never expire


@dataclass
class Points:
    """The balance and its lots. Open lots hold ``max(balance, 0)``: a credit repays a debt before it fills a new
    lot; a debit draws the soonest-expiring lots first (here the oldest: every lot lasts 12 months), a claw-back
    its own sale's lots before those, and what the lots do not hold becomes a debt; burned points go back into
    the lots they came from; the sweep empties every lot that expires and remembers from whose lots it took."""

    balance: int = 0
    lots: list[Lot] = field(default_factory=list)  # in the order they were created
    drawn: dict[str, list[list]] = field(default_factory=dict)  # a sale's burn: [lot, drawn and not given back]
    expired: dict[str, int] = field(default_factory=dict)  # by origin: what the sweep took from its lots

    def adjust(self, amount: int, origin: str) -> None:
        if amount < 0 and self.balance + amount < 0:  # a debt comes only from returns of spent points
            raise Refused(409, "insufficient_points")
        if amount > 0:
            self.credit(amount, origin)
        else:
            self.debit(-amount)

    def check_burn(self, points: int, subtotal: int) -> None:
        if points and (self.balance < 0 or points > self.balance):
            raise Refused(409, "insufficient_points")
        if points > subtotal:  # max_burn_percent 100, point_value 1
            raise Refused(422, "points_over_limit")

    def credit(self, amount: int, origin: str) -> None:
        share = max(0, min(amount, self.balance + amount))
        if share:
            self.lots.append(Lot(origin, share))
        self._moved(amount)

    def debit(self, amount: int, *, burn: str | None = None, clawback: str | None = None) -> None:
        """Draw ``amount``: a sale's burn remembers its draws; a claw-back draws its sale's lots first."""
        left = amount
        for lot in sorted(self.lots, key=lambda lot: (lot.origin != clawback, not lot.expires)):  # stable
            take = min(lot.remaining, left)
            if take:
                lot.remaining, left = lot.remaining - take, left - take
                if burn is not None:
                    self.drawn.setdefault(burn, []).append([lot, take])
        self._moved(-amount)

    def restore(self, amount: int, origin: str) -> None:
        left = max(0, min(amount, self.balance + amount))
        for draw in sorted(self.drawn.get(origin, []), key=lambda draw: self.lots.index(draw[0])):
            give = min(draw[1], left)
            draw[0].remaining, draw[1], left = draw[0].remaining + give, draw[1] - give, left - give
        if left:
            self.lots.append(Lot(origin, left, expires=False))
        self._moved(amount)

    def expire(self) -> None:  # a sweep past every lot's expiry
        for lot in self.lots:
            if lot.expires and lot.remaining:
                self.expired[lot.origin] = self.expired.get(lot.origin, 0) + lot.remaining
                self.balance, lot.remaining = self.balance - lot.remaining, 0
        self._moved(0)

    def _moved(self, amount: int) -> None:
        self.balance += amount
        assert sum(lot.remaining for lot in self.lots) == max(self.balance, 0), "the model's own lots are off"


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


@dataclass(eq=False)
class GiftCard:
    """A card handed over at the till pays after the wallet: exactly ``amount``, or without one what it holds up
    to what is still owed."""

    id: str
    code: str
    pin: str
    balance: int

    def check_pay(self, amount: int | None, owed: int) -> int:
        if amount is None:
            return min(self.balance, owed)
        if amount > owed:
            raise Refused(422, "gift_card_exceeds_payable")
        if amount > self.balance:
            raise Refused(409, "insufficient_funds")
        return amount


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


@dataclass(frozen=True)
class Campaign:
    """A voucher campaign as :func:`setup` creates it (``id`` filled in then)."""

    name: str
    kind: str
    value: int
    min_spend: int = 0
    category: str | None = None  # the one eligible category (None: every line)
    stackable: bool = False
    valid_days: int | None = None
    per_member_limit: int | None = None
    spend_threshold: int | None = None
    active: bool = True

    def body(self) -> dict:
        return {"name": self.name, "kind": self.kind, "value": self.value, "min_spend": self.min_spend,
                "categories": [self.category] if self.category else [], "stackable": self.stackable,
                "valid_days": self.valid_days, "per_member_limit": self.per_member_limit, "active": self.active,
                "auto_issue": {"spend_threshold": self.spend_threshold} if self.spend_threshold else None}

    def discount(self, category: str, net: int, paid_units: int) -> tuple[int, int]:
        """``(amount off, units made free)`` on the one line: amount off at most the net, percent off rounded
        half up, a free item the line's net over its paid units (half up) up to the cap."""
        if (self.category and category != self.category) or net <= 0:
            return 0, 0
        if self.kind == "amount_off":
            return min(self.value, net), 0
        if self.kind == "percent_off":
            return min(half_up(Fraction(net * self.value, 100)), net), 0
        amount = min(half_up(Fraction(net, paid_units)), net, self.value) if paid_units > 0 else 0
        return amount, 1 if amount else 0


CAMPAIGNS = {c.name: c for c in (
    Campaign("five_off", "amount_off", 500, min_spend=1000, valid_days=5, per_member_limit=2),
    Campaign("bakery_ten", "percent_off", 10, category="bakery", stackable=True),
    Campaign("free_coffee", "free_item", 400, category="coffee", stackable=True, valid_days=10),
    Campaign("thank_you", "amount_off", 200, stackable=True, valid_days=7, per_member_limit=2,
             spend_threshold=3000),
    Campaign("retired", "amount_off", 100, active=False),
)}
CAMPAIGN_IDS: dict[str, str] = {}  # name -> id, filled by setup()


@dataclass(eq=False)
class Voucher:
    """One voucher: its status as stored (``active``, ``redeemed``, ``void``, ``expired``) and the day (of the
    run's clock) it ends."""

    id: str
    code: str
    campaign: Campaign
    member: Member
    ends: int | None
    status: str = "active"
    earned_by: Sale | None = field(default=None, repr=False, compare=False)  # the sale whose spend earned it

    def status_on(self, day: int) -> str:
        """What the API shows: an active voucher past its end is expired, swept or not."""
        return "expired" if self.status == "active" and self.ends is not None and day >= self.ends else self.status

    def claim(self, day: int) -> None:
        """A checkout naming the voucher: it must be unused and valid now (a revoked one reads as expired)."""
        status = self.status_on(day)
        if status == "redeemed":
            raise Refused(409, "voucher_already_used")
        if status in ("expired", "void"):
            raise Refused(409, "voucher_expired")


@dataclass
class Vouchers:
    held: list[Voucher] = field(default_factory=list)

    def count(self, campaign: Campaign) -> int:
        """What ``per_member_limit`` counts: the campaign's vouchers not revoked."""
        return sum(1 for v in self.held if v.campaign is campaign and v.status != "void")

    def check_issue(self, campaign: Campaign) -> None:
        if not campaign.active:
            raise Refused(409, "campaign_not_issuing")
        if campaign.per_member_limit is not None and self.count(campaign) >= campaign.per_member_limit:
            raise Refused(409, "voucher_limit_reached")

    def due(self, net: int) -> list[Campaign]:
        """The threshold campaigns a sale of this net spend issues one voucher of (within the member's limit)."""
        return [c for c in CAMPAIGNS.values() if c.spend_threshold is not None and net >= c.spend_threshold
                and c.active and (c.per_member_limit is None or self.count(c) < c.per_member_limit)]

    def expire(self) -> None:  # a sweep past every end
        for voucher in self.held:
            if voucher.status == "active" and voucher.ends is not None:
                voucher.status = "expired"


@dataclass
class Member:
    id: str
    points: Points = field(default_factory=Points)
    wallet: Wallet = field(default_factory=Wallet)
    stamps: Stamps = field(default_factory=Stamps)
    vouchers: Vouchers = field(default_factory=Vouchers)


@dataclass
class Pricing:
    """What the vouchers of a one-line basket do (DESIGN §4 step 3): each voucher's discount, in request order,
    and the units they made free."""

    subtotal: int
    used: list[tuple[Voucher, int]]
    free: int

    @property
    def discount(self) -> int:
        return sum(amount for _, amount in self.used)

    @property
    def net(self) -> int:
        return self.subtotal - self.discount


def price_vouchers(member: Member, vouchers: list[Voucher], category: str, quantity: int, unit_price: int,
                   day: int) -> Pricing:
    """Every named voucher unused and valid first, then each applied to the line as the earlier ones left it: at
    most one non-stackable, the member's own, ``min_spend`` reached by the basket before any voucher, something
    to take off."""
    for voucher in vouchers:
        voucher.claim(day)
    subtotal = quantity * unit_price
    net, paid, used, exclusive = subtotal, quantity, [], False
    for voucher in vouchers:
        campaign = voucher.campaign
        if not campaign.stackable:
            if exclusive:
                raise Refused(422, "voucher_not_applicable")
            exclusive = True
        if voucher.member is not member or subtotal < campaign.min_spend:
            raise Refused(422, "voucher_not_applicable")
        amount, free = campaign.discount(category, net, paid)
        if amount == 0:
            raise Refused(422, "voucher_not_applicable")
        used.append((voucher, amount))
        net, paid = net - amount, paid - free
    return Pricing(subtotal, used, quantity - paid)


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
    discount: int = 0  # the vouchers'
    free: int = 0  # units the vouchers made free
    used: list[Voucher] = field(default_factory=list)
    earned_vouchers: list[Voucher] = field(default_factory=list)
    status: str = "committed"
    returned: int = 0
    clawed: int = 0  # the lines' figure: earned points of the units returned, rounded down
    taken: int = 0  # what the claw-backs took: never what the sweep already expired from the sale's lots
    refunded: int = 0
    spend_back: int = 0
    wallet_back: tuple[int, int] = (0, 0)
    card: GiftCard | None = None
    card_paid: int = 0
    card_back: int = 0
    slips: list[str] = field(default_factory=list)  # the return slip numbers its returns were given

    @property
    def net(self) -> int:
        return self.subtotal - self.discount - self.burned

    @property
    def earned(self) -> int:
        return floor(Fraction(self.net, 100))

    @property
    def stamps(self) -> int:
        return self.quantity - self.free if self.coffee and self.subtotal > 0 else 0  # units priced at 0 earn none

    def claw_back(self, points: int) -> int:
        """Take back up to ``points`` of what the sale earned: never more than it earned less what earlier
        claw-backs took and what the sweep expired from its lot (the member lost those once already)."""
        points = min(points, max(self.earned - self.taken - self.member.points.expired.get(self.id, 0), 0))
        if points:
            self.member.points.debit(points, clawback=self.id)
            self.taken += points
        return points

    def give_back_burned(self, points: int) -> None:
        if points:
            self.member.points.restore(points, self.id)

    def spend_left(self) -> int:
        """What the sale's spend is after its returns; nothing once voided."""
        return 0 if self.status == "voided" else self.net - self.spend_back

    def withdraws(self, voucher: Voucher) -> bool:
        """Whether the sale's spend, as it now stands, takes back a voucher it earned."""
        threshold, left = voucher.campaign.spend_threshold, self.spend_left()
        return left <= 0 or (threshold is not None and left < threshold)

    def return_units(self, units: int) -> int:
        """Cumulative figures for everything returned so far; this return takes the difference (earned and
        burned points round down, spend half up; the stored value, wallet and card together, half up once, each
        return's step spread over what each part still has to get back). Returns the points clawed back."""
        if self.status not in ("committed", "partially_returned"):
            raise Refused(409, "transaction_not_returnable")
        if units > self.quantity - self.returned:
            raise Refused(422, "return_exceeds_purchase")
        after = self.returned + units
        fully = after == self.quantity
        ratio = Fraction(after, self.quantity)
        earned = self.earned if fully else min(floor(Fraction(self.net, 100) * ratio), self.earned)
        burned = self.burned if fully else min(floor(self.burned * ratio), self.burned)
        spend = self.net if fully else half_up(self.net * ratio)
        paid = [*self.paid, self.card_paid]
        before = [*self.wallet_back, self.card_back]
        paid_total = sum(paid)
        total = paid_total if fully or not paid_total or not self.net else min(
            half_up(Fraction(paid_total * spend, self.net)), paid_total)
        outstanding = [max(p - b, 0) for p, b in zip(paid, before, strict=True)]
        cash_back, bonus_back, card_back = shares(min(max(total - sum(before), 0), sum(outstanding)), *outstanding)
        back = (cash_back, bonus_back)
        if self.card is not None:
            self.card.balance += card_back
            self.card_back += card_back
        m = self.member
        clawed = self.claw_back(earned - self.clawed)
        if clawed < earned - self.clawed:
            event("return clawed back less: the sale's points had expired")
        self.give_back_burned(burned - self.refunded)
        m.wallet.cash, m.wallet.bonus = m.wallet.cash + back[0], m.wallet.bonus + back[1]
        m.stamps.remove(min(after, self.stamps) - min(self.returned, self.stamps))
        self.clawed, self.refunded, self.spend_back = earned, burned, spend
        self.wallet_back = (self.wallet_back[0] + back[0], self.wallet_back[1] + back[1])
        self.returned, self.status = after, "returned" if fully else "partially_returned"
        for voucher in self.earned_vouchers:  # the sale's spend no longer reaching a threshold withdraws its voucher
            if voucher.status == "active" and self.withdraws(voucher):
                voucher.status = "void"  # as stored, as a void does
                event("return withdrew an earned voucher")
        return clawed

    def void(self, day: int) -> None:
        """Everything the sale and its returns still hold goes back: the vouchers it used while still valid (past
        their end they are expired), and the unused vouchers it earned are revoked (a return withdraws those whose
        threshold the sale's spend no longer reaches)."""
        if self.status in ("voided", "returned"):
            raise Refused(409, "transaction_not_voidable")
        m = self.member
        if self.claw_back(self.earned - self.taken) < self.earned - self.taken:
            event("void clawed back less: the sale's points had expired")
        self.give_back_burned(self.burned - self.refunded)
        m.wallet.cash += self.paid[0] - self.wallet_back[0]
        m.wallet.bonus += self.paid[1] - self.wallet_back[1]
        if self.card is not None:
            self.card.balance += self.card_paid - self.card_back
        m.stamps.remove(self.stamps - min(self.returned, self.stamps))
        for voucher in self.used:
            if voucher.earned_by is not None and voucher.earned_by.withdraws(voucher):
                voucher.status = "void"  # its earning sale was undone since: it does not come back
                event("void withdrew a used voucher whose earning sale was undone")
                continue
            voucher.status = "active" if voucher.ends is None or day < voucher.ends else "expired"
            event(f"void gave a voucher back as {voucher.status}")
        for voucher in self.earned_vouchers:
            if voucher.status == "active":  # as stored: one past its end but not yet swept is revoked too
                voucher.status = "void"
                event("void revoked an earned voucher")
        self.status = "voided"


# --- the machine ----------------------------------------------------------------------------------------------


class LoyaltyMachine(RuleBasedStateMachine):
    live: LiveApp  # set by the test
    punch_program: str

    members = Bundle("members")
    sales = Bundle("sales")
    cards = Bundle("cards")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Member] = {}
        self.sales_by_id: dict[str, Sale] = {}
        self.vouchers: list[Voucher] = []  # every voucher of the run, in issue order
        self.cards: list[GiftCard] = []
        self.day = 0  # days the clock has moved in this run

    # helpers
    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        if method == "POST":
            kwargs.setdefault("headers", {})["Idempotency-Key"] = f"sm-{next(_seq)}"
        return self.live.request(method, path, **kwargs)

    def expect_refusal(self, r: httpx.Response, refused: Refused) -> None:
        assert (r.status_code, r.json().get("code")) == (refused.status, refused.code), r.text
        event(f"refused: {refused.code}")

    def check(self, member: Member) -> None:
        points = self.call("GET", f"/v1/members/{member.id}/points").json()
        wallet = self.call("GET", f"/v1/members/{member.id}/wallet").json()
        cards = {c["program_id"]: c for c in self.call("GET", f"/v1/members/{member.id}/punch-cards").json()["data"]}
        card = cards.get(self.punch_program, {"stamps": 0, "rewards": []})
        service = (points["balance"], wallet["cash"], wallet["bonus"], card["stamps"],
                   sum(1 for r in card["rewards"] if r["status"] == "available"))
        model = (member.points.balance, member.wallet.cash, member.wallet.bonus, member.stamps.balance,
                 member.stamps.rewards)
        assert service == model, f"member {member.id}: service (points, cash, bonus, stamps, rewards) {service} " \
                                 f"!= model {model}"
        self.check_vouchers(member)

    def check_card(self, card: GiftCard | None) -> None:
        if card is None:
            return
        r = self.call("GET", f"/v1/gift-cards/{card.code}", headers={"X-Gift-Card-Pin": card.pin})
        assert r.status_code == 200, r.text
        service = (r.json()["balance"], r.json()["status"])
        model = (card.balance, "active" if card.balance > 0 else "spent")
        assert service == model, f"gift card {card.id}: service (balance, status) {service} != model {model}"

    def check_vouchers(self, member: Member) -> None:
        listed = self.call("GET", f"/v1/members/{member.id}/vouchers", params={"limit": 500}).json()["data"]
        service_vouchers = {v["code"]: (v["campaign_id"], v["status"]) for v in listed}
        model_vouchers = {v.code: (CAMPAIGN_IDS[v.campaign.name], v.status_on(self.day))
                          for v in member.vouchers.held}
        assert service_vouchers == model_vouchers, f"member {member.id} on day {self.day}: service vouchers " \
                                                   f"{service_vouchers} != model {model_vouchers}"

    def add_voucher(self, member: Member, campaign: Campaign, issued: dict) -> Voucher:
        assert (issued["campaign_id"], issued["member_id"], issued["status"]) == (
            CAMPAIGN_IDS[campaign.name], member.id, "active"), issued
        ends = None if campaign.valid_days is None else self.day + campaign.valid_days
        voucher = Voucher(issued["id"], issued["code"], campaign, member, ends)
        member.vouchers.held.append(voucher)
        self.vouchers.append(voucher)
        return voucher

    # rules
    @initialize(target=members)
    def enroll_with_balances(self) -> Member:
        member = self.enroll()
        self.top_up(member, 12_000)
        self.adjust(member, 2_000)
        for name in ("five_off", "bakery_ten", "free_coffee"):
            self.issue_voucher(member, CAMPAIGNS[name])
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
            member.points.adjust(amount, f"adjustment-{next(_seq)}")
        except Refused as refused:
            self.expect_refusal(r, refused)
        else:
            assert r.status_code == 201, r.text
        self.check(member)

    @rule(member=members, campaign=st.sampled_from(list(CAMPAIGNS.values())))
    def issue_voucher(self, member: Member, campaign: Campaign) -> None:
        r = self.call("POST", f"/v1/voucher-campaigns/{CAMPAIGN_IDS[campaign.name]}/vouchers",
                      json={"member_id": member.id})
        try:
            member.vouchers.check_issue(campaign)
        except Refused as refused:
            self.expect_refusal(r, refused)
        else:
            assert r.status_code == 201, r.text
            [issued] = r.json()
            self.add_voucher(member, campaign, issued)
        self.check(member)

    @rule(target=cards, amount=st.sampled_from([1, 700, 5000]))
    def issue_card(self, amount: int) -> GiftCard:
        r = self.call("POST", "/v1/gift-cards", json={"amount": amount})
        assert r.status_code == 201, r.text
        [issued] = r.json()
        card = GiftCard(issued["id"], issued["code"], issued["pin"], amount)
        assert issued["balance"] == amount, issued
        self.cards.append(card)
        self.check_card(card)
        return card

    def _basket(self, member: Member, quantity: int, unit_price: int, coffee: bool, points: int,
                wallet: int, vouchers: list[Voucher], card: GiftCard | None = None,
                card_amount: int | None = None) -> dict:
        tender = [{"code": card.code, "pin": card.pin, **({} if card_amount is None else {"amount": card_amount})}
                  ] if card else []
        redeem = {k: v for k, v in (("points", points), ("wallet_amount", wallet),
                                    ("vouchers", [v.code for v in vouchers]), ("gift_cards", tender)) if v}
        return {"member": {"member_id": member.id}, "store_id": STORE, "currency": "USD",
                "lines": [{"line_id": "1", "sku": "COFFEE" if coffee else "BREAD",
                           "category": "coffee" if coffee else "bakery", "quantity": quantity,
                           "unit_price": unit_price}], **({"redeem": redeem} if redeem else {})}

    def _price(self, member: Member, quantity: int, unit_price: int, coffee: bool,
               vouchers: list[Voucher]) -> Pricing:
        return price_vouchers(member, vouchers, "coffee" if coffee else "bakery", quantity, unit_price, self.day)

    def _predict(self, member: Member, quantity: int, unit_price: int, coffee: bool, points: int, wallet: int,
                 vouchers: list[Voucher], card: GiftCard | None = None,
                 card_amount: int | None = None) -> tuple[Pricing, int]:
        """Vouchers (step 3), then points burned on the net they leave (step 4), then the wallet and then the gift
        card (step 5). Returns the pricing and what the card pays."""
        pricing = self._price(member, quantity, unit_price, coffee, vouchers)
        member.points.check_burn(points, pricing.net)
        member.wallet.check_pay(wallet, pricing.net - points)
        return pricing, card.check_pay(card_amount, pricing.net - points - wallet) if card else 0

    def _net_hint(self, member: Member, quantity: int, unit_price: int, coffee: bool,
                  vouchers: list[Voucher]) -> int:
        """The net the vouchers would leave (the subtotal when they are refused): what redemptions are drawn
        as shares of."""
        try:
            return self._price(member, quantity, unit_price, coffee, vouchers).net
        except Refused:
            return quantity * unit_price

    def _vouchers(self, member: Member, picks: list[int]) -> list[Voucher]:
        """Vouchers a request names: ``i >= 0`` picks among the member's usable ones (so that most apply),
        ``i < 0`` among every voucher of the run (used, expired, revoked, another member's); each named once."""
        usable = [v for v in member.vouchers.held if v.status_on(self.day) == "active"]
        chosen: list[Voucher] = []
        for i in picks:
            pool = usable if i >= 0 else self.vouchers
            if pool:
                voucher = pool[i % len(pool)]
                if voucher not in chosen:
                    chosen.append(voucher)
        return chosen

    @staticmethod
    def _applied(body: dict) -> list[tuple[str, int]]:
        return [(a["id"], a["amount"]) for a in body["applied"] if a["kind"] == "voucher"]

    # Redemptions are drawn as shares of what the member holds (so that most commits succeed) or as a fixed
    # amount (often too much: the refusals are predicted too). Vouchers mostly the member's own.
    share = st.one_of(st.sampled_from([Fraction(0), Fraction(0), Fraction(1, 3), Fraction(1)]),
                      st.sampled_from([1, 77, 5000]))
    basket_args = {"quantity": st.integers(1, 3), "unit_price": st.sampled_from([0, 1, 99, 150, 450, 1000, 3333]),
                   "coffee": st.booleans(), "points": share, "wallet": share,
                   "picks": st.lists(st.integers(-1, 4), max_size=2)}

    @staticmethod
    def _amount(share: Fraction | int, held: int) -> int:
        return floor(max(held, 0) * share) if isinstance(share, Fraction) else share

    @rule(member=members, **basket_args)
    def quote(self, member: Member, quantity: int, unit_price: int, coffee: bool, points, wallet,
              picks: list[int], card: GiftCard | None = None, card_amount: int | None = None) -> None:
        vouchers = self._vouchers(member, picks)
        net = self._net_hint(member, quantity, unit_price, coffee, vouchers)
        points = self._amount(points, member.points.balance)
        wallet = self._amount(wallet, min(member.wallet.cash + member.wallet.bonus, net - points))
        r = self.call("POST", "/v1/checkout/quote", json=self._basket(
            member, quantity, unit_price, coffee, points, wallet, vouchers, card, card_amount))
        try:
            pricing, card_pays = self._predict(member, quantity, unit_price, coffee, points, wallet, vouchers, card,
                                               card_amount)
        except Refused as refused:
            self.expect_refusal(r, refused)
            return
        assert r.status_code == 200, r.text
        quote = r.json()
        assert quote["totals"]["discount"] == pricing.discount + points, quote["totals"]
        assert quote["totals"]["net"] == pricing.net - points, quote["totals"]
        assert quote["totals"]["gift_cards"] == card_pays, quote["totals"]
        assert quote["totals"]["payable"] == pricing.net - points - wallet - card_pays, quote["totals"]
        assert self._applied(quote) == [(v.id, amount) for v, amount in pricing.used], quote["applied"]
        assert quote["earn"]["points"] == floor(Fraction(pricing.net - points, 100))
        assert quote["balances"]["points"] == member.points.balance

    @rule(target=sales, member=members, **basket_args)
    def commit(self, member: Member, quantity: int, unit_price: int, coffee: bool, points, wallet,
               picks: list[int], card: GiftCard | None = None, card_amount: int | None = None):
        vouchers = self._vouchers(member, picks)
        net = self._net_hint(member, quantity, unit_price, coffee, vouchers)
        points = self._amount(points, min(member.points.balance, net))
        wallet = self._amount(wallet, min(member.wallet.cash + member.wallet.bonus, net - points))
        body = {**self._basket(member, quantity, unit_price, coffee, points, wallet, vouchers, card, card_amount),
                "receipt_id": f"sm-{next(_seq)}"}
        r = self.call("POST", "/v1/checkout/transactions", json=body)
        try:
            pricing, card_pays = self._predict(member, quantity, unit_price, coffee, points, wallet, vouchers, card,
                                               card_amount)
        except Refused as refused:
            self.expect_refusal(r, refused)
            self.check(member)
            self.check_card(card)
            return multiple()  # no sale to remember
        assert r.status_code == 201, r.text
        txn = r.json()
        paid = split(wallet, member.wallet.cash, member.wallet.bonus)
        sale = Sale(txn["id"], member, quantity, pricing.subtotal, coffee, points, paid, discount=pricing.discount,
                    free=pricing.free, used=[v for v, _ in pricing.used], card=card if card_pays else None,
                    card_paid=card_pays)
        if card is not None:
            card.balance -= card_pays
            event("commit paid with a gift card" if card_pays else "a gift card paid nothing")
        for voucher in sale.used:
            voucher.status = "redeemed"
            event(f"commit redeemed a {voucher.campaign.kind} voucher")
        member.points.debit(points, burn=sale.id)
        member.points.credit(sale.earned, sale.id)
        member.wallet.cash, member.wallet.bonus = member.wallet.cash - paid[0], member.wallet.bonus - paid[1]
        member.stamps.add(sale.stamps)
        due = member.vouchers.due(sale.net)  # threshold vouchers, judged on the sale's net spend
        issued = txn["earned"]["vouchers_issued"]
        assert [v["campaign_id"] for v in issued] == [CAMPAIGN_IDS[c.name] for c in due], issued
        sale.earned_vouchers = [self.add_voucher(member, c, v) for c, v in zip(due, issued, strict=True)]
        for voucher in sale.earned_vouchers:
            voucher.earned_by = sale
        event(f"commit issued {len(due)} threshold vouchers")
        assert txn["totals"]["discount"] == sale.discount + points and txn["totals"]["net"] == sale.net, txn
        assert txn["totals"]["gift_cards"] == card_pays, txn["totals"]
        assert txn["totals"]["payable"] == sale.net - wallet - card_pays, txn["totals"]
        assert self._applied(txn) == [(v.id, amount) for v, amount in pricing.used], txn["applied"]
        assert txn["earned"]["points"] == sale.earned
        assert txn["balances_after"]["points"] == member.points.balance
        self.sales_by_id[sale.id] = sale
        self.check(member)
        self.check_card(card)
        return sale

    @rule(target=sales, member=members, pick=st.integers(0, 4), quantity=st.integers(1, 3),
          unit_price=st.sampled_from([1000, 450, 3333]), coffee=st.booleans(), points=share, wallet=share,
          second=st.integers(-1, 4) | st.none())
    def commit_with_voucher(self, member: Member, pick: int, quantity: int, unit_price: int, coffee: bool, points,
                            wallet, second: int | None):
        """A basket of the category one of the member's usable vouchers asks for, so that most of these apply
        (``min_spend`` and a second voucher may still refuse them)."""
        usable = [v for v in member.vouchers.held if v.status_on(self.day) == "active"]
        if not usable:
            return multiple()
        voucher = usable[pick % len(usable)]
        if voucher.campaign.category:
            coffee = voucher.campaign.category == "coffee"
        picks = [usable.index(voucher)] + ([] if second is None else [second])
        return self.commit(member, quantity, unit_price, coffee, points, wallet, picks)

    card_amount = st.none() | st.sampled_from([1, 300, 5000])

    @rule(target=sales, member=members, card=cards, card_amount=card_amount, **basket_args)
    def commit_with_card(self, member: Member, card: GiftCard, card_amount: int | None, quantity: int,
                         unit_price: int, coffee: bool, points, wallet, picks: list[int]):
        return self.commit(member, quantity, unit_price, coffee, points, wallet, picks, card, card_amount)

    @rule(member=members, card=cards, card_amount=card_amount, **basket_args)
    def quote_with_card(self, member: Member, card: GiftCard, card_amount: int | None, quantity: int,
                        unit_price: int, coffee: bool, points, wallet, picks: list[int]) -> None:
        self.quote(member, quantity, unit_price, coffee, points, wallet, picks, card, card_amount)

    @rule(sale=sales)
    def void(self, sale: Sale) -> None:
        r = self.call("POST", f"/v1/checkout/transactions/{sale.id}/void")
        try:
            sale.void(self.day)
        except Refused as refused:
            self.expect_refusal(r, refused)
        else:
            assert r.status_code == 200 and r.json()["status"] == "voided", r.text
        self.check(sale.member)
        self.check_card(sale.card)

    @rule(sale=sales, units=st.integers(1, 3))
    def return_units(self, sale: Sale, units: int) -> None:
        slip = f"slip-{next(_seq)}"
        r = self.call("POST", f"/v1/checkout/transactions/{sale.id}/returns",
                      json={"lines": [{"line_id": "1", "quantity": units}], "receipt_id": slip})
        try:
            clawed = sale.return_units(units)
        except Refused as refused:
            self.expect_refusal(r, refused)
        else:
            assert r.status_code == 201 and r.json()["reversed"]["points"] == clawed, r.text
            sale.slips.append(slip)
        self.check(sale.member)
        self.check_card(sale.card)

    @precondition(lambda self: any(sale.slips for sale in self.sales_by_id.values()))
    @rule(data=st.data(), units=st.integers(1, 3))
    def return_again(self, data, units: int) -> None:
        """A till that lost a return's answer and its key sends it again with the slip number it gave: refused
        whatever the sale's state, and nothing moves."""
        sale = data.draw(st.sampled_from([s for s in self.sales_by_id.values() if s.slips]))
        r = self.call("POST", f"/v1/checkout/transactions/{sale.id}/returns",
                      json={"lines": [{"line_id": "1", "quantity": units}], "receipt_id": sale.slips[-1]})
        self.expect_refusal(r, Refused(409, "duplicate_return"))
        self.check(sale.member)
        self.check_card(sale.card)

    @precondition(lambda self: self.day + 3 <= MAX_DAYS)
    @rule(days=st.sampled_from([1, 3]))
    def travel(self, days: int) -> None:
        """The clock moves on: vouchers past their end read as expired before any sweep."""
        self.live.clock.advance(timedelta(days=days))
        self.day += days
        for member in self.model.values():
            self.check_vouchers(member)

    @rule()
    def sweep(self) -> None:
        as_of = (self.live.clock.now() + timedelta(days=400)).isoformat()
        assert cli.main(["sweep", "--allow-future", "--as-of", as_of]) == 0
        for member in self.model.values():
            member.points.expire()
            member.stamps.expire()
            member.vouchers.expire()
            self.check(member)

    def teardown(self) -> None:
        for member in self.model.values():
            self.check(member)
        for card in self.cards:
            self.check_card(card)
        self.live.run(verify_ledger(self.live.app))
        # The redemption report over all time (this and earlier runs, whose clocks moved ahead) reconciles with
        # what the members' points accounts and the gift cards hold.
        report = self.call("GET", "/v1/reports/redemptions", params={"to": "9999-01-01T00:00:00Z"}).json()
        assert points_outstanding(report["points"]) == self.live.run(held(self.live.app, "points")), report
        cards = report["gift_cards"]
        assert cards["issued"] - cards["spent"] == self.live.run(held(self.live.app, "gift_card")), report


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
    """One store, the program described in the module docstring, one punch card programme, the voucher
    campaigns of :data:`CAMPAIGNS`."""
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
    for campaign in CAMPAIGNS.values():
        r = live.request("POST", "/v1/voucher-campaigns", json=campaign.body())
        assert r.status_code == 201, r.text
        CAMPAIGN_IDS[campaign.name] = r.json()["id"]
