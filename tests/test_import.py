"""``loyalty import``: members and their purchase history from a JSON Lines file, committed through the checkout."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from service import cli
from tests import factories as f
from tests.server import run_cli


def _purchase(store: str, receipt: str, when, *lines: dict) -> dict:
    return {"store_id": store, "receipt_id": receipt, "occurred_at": when.isoformat(),
            "lines": list(lines) or [f.line(unit_price=2500)]}


def _write(path: Path, *records: dict | str) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


async def _member_by_email(client, email: str) -> dict:
    found = (await client.get("/v1/members", params={"email": email})).json()["data"]
    assert len(found) == 1, found
    return found[0]


async def _history(client, member_id: str) -> list[tuple[str, int]]:
    entries = (await client.get(f"/v1/members/{member_id}/ledger", params={"limit": 500})).json()["data"]
    return sorted((e["kind"], e["amount"]) for e in entries)


async def test_an_imported_history_earns_what_the_same_sales_at_a_till_earn(client, clock, app, cli_env, capsys,
                                                                            tmp_path):
    store = (await f.create_store(client))["id"]
    now = clock.now()
    sales = [(now - timedelta(days=40), [f.line(unit_price=2500)]),
             (now - timedelta(days=300), [f.line("1", quantity=3, unit_price=1999), f.line("2", unit_price=5)]),
             (now - timedelta(days=2), [f.line(unit_price=120_000)])]  # a big one, last: tier progress
    email = f.unique_email()
    record = {"external_ref": f"crm-{email}", "name": "Imported Ida", "email": email,
              "purchases": [_purchase(store, f"imp-{i}-{email}", when, *lines)  # newest first in the file
                            for i, (when, lines) in enumerate(sorted(sales, key=lambda s: s[0], reverse=True))]}
    assert await run_cli("import", str(_write(tmp_path / "members.jsonl", record))) == 0
    out = capsys.readouterr().out
    assert "1 members (1 enrolled, 0 already there), 3 purchases committed, 0 already committed" in out
    assert "0 lines failed" in out

    imported = await _member_by_email(client, email)
    assert imported["external_ref"] == record["external_ref"] and imported["name"] == "Imported Ida"
    twin = (await f.enroll(client))["id"]  # the same sales at a till, oldest first
    for i, (when, lines) in enumerate(sorted(sales, key=lambda s: s[0])):
        r = await f.commit(client, f.basket(twin, store, lines, occurred_at=when.isoformat()),
                           receipt_id=f"till-{i}-{email}")
        assert r.status_code == 201, r.text

    assert await f.balance(client, imported["id"]) == await f.balance(client, twin) > 0
    assert await _history(client, imported["id"]) == await _history(client, twin)
    tier, twin_tier = [(await client.get(f"/v1/members/{m}/tier")).json() for m in (imported["id"], twin)]
    assert tier["qualifying_spend"] == twin_tier["qualifying_spend"] > 0
    assert (tier["code"], tier["spend_to_next"], len(tier["history"])) == \
        (twin_tier["code"], twin_tier["spend_to_next"], len(twin_tier["history"]))
    segment, twin_segment = [(await client.get(f"/v1/members/{m}/segment")).json() for m in (imported["id"], twin)]
    assert segment == twin_segment and segment["frequency"] == 3
    assert await run_cli("verify") == 0
    await f.verify_ledger(app)


async def test_running_the_same_file_again_commits_only_what_is_new(client, clock, app, cli_env, capsys, tmp_path):
    store = (await f.create_store(client))["id"]
    now = clock.now()
    email = f.unique_email()
    first = _purchase(store, f"a-{email}", now - timedelta(days=10))
    record = {"external_ref": f"crm-{email}", "name": "Resumed Rui", "email": email, "purchases": [first]}
    assert await run_cli("import", str(_write(tmp_path / "one.jsonl", record))) == 0
    member = (await _member_by_email(client, email))["id"]
    after_first = await f.balance(client, member)
    capsys.readouterr()

    assert await run_cli("import", str(_write(tmp_path / "one.jsonl", record))) == 0  # the same file: nothing
    assert "1 members (0 enrolled, 1 already there), 0 purchases committed, 1 already committed" in \
        capsys.readouterr().out
    assert await f.balance(client, member) == after_first

    record["purchases"].append(_purchase(store, f"b-{email}", now - timedelta(days=5)))  # an interrupted import
    assert await run_cli("import", str(_write(tmp_path / "two.jsonl", record))) == 0
    assert "1 purchases committed, 1 already committed" in capsys.readouterr().out
    assert await f.balance(client, member) == 2 * after_first
    await f.verify_ledger(app)


async def test_a_line_that_fails_is_reported_and_nothing_of_it_is_written(client, clock, app, cli_env, capsys,
                                                                          tmp_path):
    store = (await f.create_store(client))["id"]
    other = (await f.enroll(client))["id"]
    taken = f"taken-{f.unique_email()}"  # a receipt another member has at this store
    assert (await f.commit(client, f.basket(other, store), receipt_id=taken)).status_code == 201
    now = clock.now()
    good, bad = f.unique_email(), [f.unique_email() for _ in range(4)]
    entries_before = await f.entry_count(app)

    def member(email: str, *purchases: dict) -> dict:
        return {"external_ref": f"crm-{email}", "name": "Line Test", "email": email, "purchases": list(purchases)}

    path = _write(
        tmp_path / "mixed.jsonl",
        member(good, _purchase(store, f"g-{good}", now - timedelta(days=1))),
        "{not json",
        # the first purchase is fine, the second names a store that does not exist: the member is not enrolled
        member(bad[0], _purchase(store, f"x-{bad[0]}", now - timedelta(days=3)),
               _purchase("no-such-store", f"y-{bad[0]}", now - timedelta(days=2))),
        member(bad[1], _purchase(store, taken, now - timedelta(days=3))),
        member(bad[2], _purchase(store, f"z-{bad[2]}", now + timedelta(days=3))),  # in the future
        {"name": "No Ref", "email": bad[3]},
        "",  # blank lines are skipped
    )
    assert await run_cli("import", str(path)) == 1
    captured = capsys.readouterr()
    # The good line shared its transaction with the bad ones, which rolled back; it went in again on its own.
    assert "1 members (1 enrolled, 0 already there), 1 purchases committed" in captured.out
    assert "5 lines failed" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("FAILED: ")]
    assert [line.split(":")[1].strip().split(" ")[1] for line in failed] == ["2", "3", "4", "5", "6"]
    assert "line 2: " in failed[0]
    assert f"line 3 (crm-{bad[0]}): " in failed[1] and "no-such-store" in failed[1]
    assert f"line 4 (crm-{bad[1]}): " in failed[2] and "already committed" in failed[2]
    assert f"line 5 (crm-{bad[2]}): " in failed[3] and "occurred_at" in failed[3]
    assert "line 6: external_ref: Field required" in failed[4]
    for email in bad:
        assert (await client.get("/v1/members", params={"email": email})).json()["data"] == []
    assert await f.entry_count(app) == entries_before + 2  # the good line's one sale: two entries
    await f.verify_ledger(app)


async def test_two_lines_for_one_member_make_one_member(client, clock, app, cli_env, capsys, tmp_path,
                                                        monkeypatch):
    from service.imports import rules

    store = (await f.create_store(client))["id"]
    now = clock.now()
    email = f.unique_email()
    lines = [{"external_ref": f"crm-{email}", "name": "Twice Tom", "email": email,
              "purchases": [_purchase(store, f"{n}-{email}", now - timedelta(days=n))]} for n in (1, 2)]
    monkeypatch.setattr(rules, "MEMBERS_PER_TRANSACTION", 1)  # the two lines at once, in two transactions
    assert await run_cli("import", "--concurrency", "2", str(_write(tmp_path / "twice.jsonl", *lines))) == 0
    assert "2 members (1 enrolled, 1 already there), 2 purchases committed" in capsys.readouterr().out
    member = (await _member_by_email(client, email))["id"]
    assert await f.balance(client, member) == 2 * 25
    await f.verify_ledger(app)


async def test_members_go_in_several_to_a_transaction(client, clock, app, cli_env, capsys, tmp_path, monkeypatch):
    """Eight lines, one transaction; two of them for one member, who is found again inside it."""
    from service.db import Database

    transactions = []
    run = Database.run

    async def counted(self, work, **kwargs):
        transactions.append(work)
        return await run(self, work, **kwargs)

    monkeypatch.setattr(Database, "run", counted)
    store = (await f.create_store(client))["id"]
    now = clock.now()
    email = f.unique_email()
    twice = [{"external_ref": f"crm-{email}", "name": "Twice Tom", "email": email,
              "purchases": [_purchase(store, f"{n}-{email}", now - timedelta(days=n))]} for n in (1, 2)]
    others = [{"external_ref": f"crm-{n}-{store}", "name": "Other", "email": f.unique_email(),
               "purchases": [_purchase(store, f"{n}-{store}", now - timedelta(days=1))]} for n in range(6)]
    path = _write(tmp_path / "eight.jsonl", twice[0], *others, twice[1])
    assert await run_cli("import", "--concurrency", "1", str(path)) == 0
    assert "8 members (7 enrolled, 1 already there), 8 purchases committed" in capsys.readouterr().out
    assert len(transactions) == 2  # the program's currency, then the eight lines together
    member = (await _member_by_email(client, email))["id"]
    assert await f.balance(client, member) == 2 * 25
    await f.verify_ledger(app)


async def test_the_import_explains_its_file_and_refuses_a_missing_one(cli_env, capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["import", "--help"])
    assert "external_ref required" in capsys.readouterr().out
    assert await run_cli("import", str(tmp_path / "missing.jsonl")) == 2
    assert "is not a file" in capsys.readouterr().err


async def test_the_import_refreshes_the_statistics_as_the_member_base_doubles(client, clock, cli_env, capsys,
                                                                              tmp_path, monkeypatch):
    from service.imports import repository, rules

    refreshed = []
    refresh = repository.refresh_statistics

    async def counted(session):
        refreshed.append(1)
        await refresh(session)  # ANALYZE on PostgreSQL: it must run inside the import's transaction

    monkeypatch.setattr(rules, "FIRST_ANALYZE", 2)
    monkeypatch.setattr(rules, "MEMBERS_PER_TRANSACTION", 1)  # so that the count passes 2, 4 and 8 one by one
    monkeypatch.setattr(repository, "refresh_statistics", counted)
    store = (await f.create_store(client))["id"]
    records = [{"external_ref": f"crm-{n}-{store}", "name": "Many", "email": f.unique_email(),
                "purchases": [_purchase(store, f"{n}-{store}", clock.now() - timedelta(days=1))]} for n in range(9)]
    assert await run_cli("import", str(_write(tmp_path / "nine.jsonl", *records))) == 0
    assert len(refreshed) == 3  # at 2, 4 and 8 members


async def test_jobs_share_the_lines_and_report_as_one(client, clock, app, cli_env, capsys, tmp_path):
    store = (await f.create_store(client))["id"]
    when = clock.now() - timedelta(days=1)
    emails = [f.unique_email() for _ in range(5)]
    records = [{"external_ref": f"crm-{e}", "name": "Job", "email": e,
                "purchases": [_purchase(store, f"{n}-{e}", when)]} for n, e in enumerate(emails)]
    records.insert(2, "{broken")
    records.append({**records[0], "purchases": [_purchase(store, f"again-{emails[0]}", when)]})  # line 7
    assert await run_cli("import", "--jobs", "2", str(_write(tmp_path / "jobs.jsonl", *records))) == 1
    captured = capsys.readouterr()
    assert "6 members (5 enrolled, 1 already there), 6 purchases committed, 0 already committed" in captured.out
    assert "1 lines failed" in captured.out
    assert "FAILED: line 3: " in captured.err
    assert await f.balance(client, (await _member_by_email(client, emails[0]))["id"]) == 2 * 25
    for e in emails[1:]:
        assert await f.balance(client, (await _member_by_email(client, e))["id"]) == 25
    await f.verify_ledger(app)


async def test_a_line_that_is_not_utf8_fails_alone_and_names_its_byte(client, clock, app, cli_env, capsys, tmp_path):
    """A CRM export saved as Latin-1 was read with its accented letters replaced, and a run of the file saved again
    as UTF-8 found the member by ``external_ref`` and kept the broken name."""
    store = (await f.create_store(client))["id"]
    first, second = f.unique_email(), f.unique_email()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({"external_ref": f"crm-{first}", "name": "Jürgen Müller", "email": first},
                                ensure_ascii=False).encode("latin-1") + b"\n"
                     + json.dumps({"external_ref": f"crm-{second}", "name": "Ada", "email": second,
                                   "purchases": [_purchase(store, "R-1", clock.now() - timedelta(days=1))]}).encode()
                     + b"\n")
    assert await run_cli("import", str(path)) == 1
    err = capsys.readouterr().err
    assert "line 1" in err and "not UTF-8: byte 0xfc at column" in err, err
    assert (await client.get("/v1/members", params={"email": first})).json()["data"] == []
    assert (await _member_by_email(client, second))["name"] == "Ada"  # the other lines go on
    _write(path, {"external_ref": f"crm-{first}", "name": "Jürgen Müller", "email": first})
    assert await run_cli("import", str(path)) == 0
    assert (await _member_by_email(client, first))["name"] == "Jürgen Müller"


async def test_a_file_with_a_byte_order_mark_loses_no_line(client, clock, app, cli_env, capsys, tmp_path):
    """Excel and Windows tools put a byte order mark before UTF-8: the first line failed as invalid JSON."""
    email = f.unique_email()
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"external_ref": f"crm-{email}", "name": "First",
                                                    "email": email}).encode() + b"\n")
    assert await run_cli("import", str(path)) == 0, capsys.readouterr().err
    assert (await _member_by_email(client, email))["name"] == "First"


async def test_an_import_that_cannot_reach_the_database_says_so_in_one_line(cli_env, capsys, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("LOYALTY_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    assert await run_cli("import", str(_write(tmp_path / "one.jsonl", {"external_ref": "crm-x", "name": "X"}))) == 2
    err = capsys.readouterr().err
    assert "loyalty import: " in err and "run the file again" in err and "Traceback" not in err


async def test_an_erased_member_is_not_imported_again(client, clock, app, cli_env, capsys, tmp_path):
    """An erasure clears ``external_ref``: the same file run again found no one and enrolled the person anew, with
    every field the erasure had removed (and a line with purchases failed as a duplicate receipt)."""
    store = (await f.create_store(client))["id"]
    alone, buyer = f.unique_email(), f.unique_email()
    path = _write(tmp_path / "members.jsonl",
                  {"external_ref": f"crm-{alone}", "name": "Erin", "email": alone, "phone": f.unique_phone()},
                  {"external_ref": f"crm-{buyer}", "name": "Ed", "email": buyer,
                   "purchases": [_purchase(store, f"r-{buyer}", clock.now() - timedelta(days=3))]})
    assert await run_cli("import", str(path)) == 0
    for email in (alone, buyer):
        assert (await client.delete(f"/v1/members/{(await _member_by_email(client, email))['id']}")).status_code == 204
    capsys.readouterr()
    assert await run_cli("import", str(path)) == 1
    err = capsys.readouterr().err
    assert err.count("was erased: they are not imported again") == 2, err
    for email in (alone, buyer):
        assert (await client.get("/v1/members", params={"email": email})).json()["data"] == []
    # the same person enrolled again at a till, with the same reference, is theirs to import into
    again = await f.enroll(client, email=alone, external_ref=f"crm-{alone}")
    _write(path, {"external_ref": f"crm-{alone}", "name": "Erin",
                  "purchases": [_purchase(store, f"r2-{alone}", clock.now() - timedelta(days=1))]})
    assert await run_cli("import", str(path)) == 0
    assert len((await client.get(f"/v1/members/{again['id']}/transactions")).json()["data"]) == 1


async def test_an_imported_purchase_older_than_the_expiry_is_expired_by_the_next_sweep(client, clock, app, cli_env,
                                                                                       capsys, tmp_path):
    """A purchase imported from 14 months ago earns its points in a lot that ended two months ago (a lot expires
    12 months after its sale's ``occurred_at``, not after the import): the points are the member's until the next
    sweep, which expires them; the lot of a purchase a month old runs on. Returning the old purchase afterwards
    takes nothing back: its points expired once already."""
    store = (await f.create_store(client))["id"]
    now = clock.now()
    email = f.unique_email()
    record = {"external_ref": f"crm-{email}", "name": "Old Olga", "email": email, "purchases": [
        _purchase(store, f"old-{email}", now - timedelta(days=425), f.line(unit_price=2500)),
        _purchase(store, f"new-{email}", now - timedelta(days=30), f.line(unit_price=4000))]}
    assert await run_cli("import", str(_write(tmp_path / "members.jsonl", record))) == 0
    member = (await _member_by_email(client, email))["id"]
    assert await f.balance(client, member) == 25 + 40
    capsys.readouterr()
    assert await run_cli("sweep") == 0
    assert "expired 25 points from 1 lots of 1 members" in capsys.readouterr().out
    points = (await client.get(f"/v1/members/{member}/points")).json()
    assert points["balance"] == 40 and [e["amount"] for e in points["expiring"]] == [40]
    sales = (await client.get(f"/v1/members/{member}/transactions")).json()["data"]
    old = next(s for s in sales if s["receipt_id"] == f"old-{email}")
    r = await f.return_lines(client, old["id"], {"1": 1})
    assert r.status_code == 201 and r.json()["reversed"]["points"] == 0, r.text
    assert await f.balance(client, member) == 40
    assert await run_cli("verify") == 0
    await f.verify_ledger(app)


async def test_the_progress_bar_ends_at_its_total(client, clock, app, cli_env, capsys, tmp_path, monkeypatch):
    """The bar's total is the lines the import takes: a byte order mark on a first line otherwise blank was counted
    as a line, and the bar stopped one short of its total (without its last newline)."""
    import io

    from service import progress

    bars = []

    class Recorded(progress.Progress):
        def __init__(self, total, label, **kw):
            kw["stream"], kw["enabled"] = io.StringIO(), True
            super().__init__(total, label, **kw)
            bars.append(self)

    monkeypatch.setattr(progress, "Progress", Recorded)
    store = (await f.create_store(client))["id"]
    when = clock.now() - timedelta(days=1)
    recs = [{"external_ref": f"crm-p{n}", "name": "P", "email": f.unique_email(),
             "purchases": [_purchase(store, f"p-{n}", when)]} for n in range(5)]
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n" + "".join(json.dumps(r) + "\n" for r in recs).encode() + b"{bad\n  \n")
    await run_cli("import", str(path))
    bar = bars[-1]
    assert bar.done == bar.total == 6, (bar.done, bar.total)
    assert bar.stream.getvalue().endswith("\n")
