"""The real customer base: a sample of CDNOW customers (``../shared/data/cdnow_master.txt``) replayed through the
service layer (the checkout's own commit, one database transaction per customer, to stay within the suite's
budget) with their purchase dates as ``occurred_at``, then ``loyalty sweep --as-of`` the end of the data. The segment
report must look like CDNOW: every quadrant populated, and since most customers bought once in early 1997,
``stranger`` and ``lapsed`` dominate. ``benchmarks/cdnow.py --sweep`` does the same on the full set."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from benchmarks.cdnow import DATA, STORE, checkout_body, read_purchases
from service.auth.rules import Principal
from service.checkout import service as checkout
from service.checkout.schemas import CommitRequest
from service.members import service as members
from service.members.schemas import MemberCreate
from tests import factories as f
from tests.server import run_cli

END = datetime(1998, 7, 1, tzinfo=UTC)
SAMPLE_EVERY = 200  # 118 of the 23,570 customers, ~350 purchases: seconds on an idle machine

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is not there")


async def test_a_cdnow_sample_segments_plausibly(app, client, clock, cli_env):
    clock.freeze(END)
    customers = read_purchases()
    sample = sorted(customers, key=int)[::SAMPLE_EVERY]
    await f.create_store(client, STORE, tz="UTC")
    admin = Principal(key_id="cdnow-replay", role="admin", store_id=None)
    for customer in sample:
        async with app.state.db.transaction() as session:
            member = await members.enroll(session, MemberCreate(name=f"CDNOW {customer}",
                                                                external_ref=f"cdnow-{customer}"), clock, region="US")
            for i, purchase in enumerate(customers[customer]):
                body = CommitRequest.model_validate(checkout_body(member.id, purchase, i, "USD"))
                await checkout.commit(session, body, admin, clock, region="US")
    assert await run_cli("sweep", "--as-of", END.isoformat()) == 0
    report = (await client.get("/v1/reports/segments")).json()
    quadrants, lifecycles = report["quadrants"], report["lifecycles"]
    assert report["members"] == len(sample) and report["not_segmented"] == 0
    assert all(n > 0 for n in quadrants.values()), report
    assert max(quadrants, key=quadrants.get) == "stranger" and quadrants["stranger"] > len(sample) / 2, report
    assert max(lifecycles, key=lifecycles.get) == "lapsed" and lifecycles["lapsed"] > len(sample) / 2, report
    # every customer's first purchase was in early 1997; only those whose purchases were all 0.00 (skipped) are new
    assert lifecycles["new"] == sum(1 for c in sample if not customers[c])
    # the thresholds are the medians of the customers who bought in the trailing year
    assert report["thresholds"]["source"] == "sweep" and report["thresholds"]["min_frequency"] >= 2
