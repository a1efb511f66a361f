"""The operator's commands: what ``loyalty verify`` finds, what ``--help`` says, a sweep's refusal of a future
``--as-of``, and one line instead of a traceback when a command cannot run. (Each domain's own commands are
tested with it: the import in ``test_import.py``, the sweep's steps in ``test_points.py`` and the others.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from service import cli
from tests import factories as f
from tests.server import run_cli


async def _sql(app, statement: str, **params) -> list:
    async with app.state.db.transaction() as session:
        result = await session.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


async def _verify_fails(capsys, *expected: str) -> None:
    assert await run_cli("verify") == 1
    out = capsys.readouterr().out
    assert all(words in out for words in expected), out


async def test_verify_finds_a_lot_off_its_draws(client, clock, app, cli_env, capsys):
    """A burn that records its draw on one lot and takes the points from another leaves the account's total right
    and the lots wrong: points would then expire early or late."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 50)  # lot 1, ends first
    clock.advance(timedelta(days=62))
    assert (await f.commit(client, f.basket(member, store, [f.line(unit_price=3000)]))).status_code == 201
    assert (await f.commit(client, f.basket(member, store, [f.line(unit_price=2000)], points=20))).status_code == 201
    assert await run_cli("verify") == 0
    lots = await _sql(app, "SELECT id FROM point_lots WHERE member_id = :m ORDER BY id", m=member)
    first, second = lots[0][0], lots[1][0]
    await _sql(app, "UPDATE point_lots SET remaining = remaining + 20 WHERE id = :i", i=first)
    await _sql(app, "UPDATE point_lots SET remaining = remaining - 20 WHERE id = :i", i=second)
    capsys.readouterr()
    await _verify_fails(capsys, f"point lot {first} of 50 has 50 remaining but 20 was drawn")


async def test_verify_finds_a_sale_whose_points_are_not_its_ledgers(client, app, cli_env, capsys):
    """Returns and voids reverse the sale's own figures: a sale saying 300 points while its ledger transaction
    earned 30 would have a return claw back 300."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    r = await f.commit(client, f.basket(member, store, [f.line(unit_price=3000)]))
    assert r.status_code == 201, r.text
    assert await run_cli("verify") == 0
    await _sql(app, "UPDATE checkout_transactions SET points_earned = 300 WHERE id = :t", t=r.json()["id"])
    capsys.readouterr()
    await _verify_fails(capsys, f"sale {r.json()['id']} says 300 points earned", "moved 30")


async def test_verify_finds_an_entry_filed_under_another_member(client, app, cli_env, capsys):
    """The member's ledger page reads entries by their own member id: an entry of Alice's account filed under Bob
    shows Alice's points on Bob's statement."""
    alice, bob = (await f.enroll(client))["id"], (await f.enroll(client))["id"]
    await f.adjust(client, alice, 10)
    assert await run_cli("verify") == 0
    entry = (await _sql(app, "SELECT id, transaction_id, account_id, asset, amount, kind, created_at "
                             "FROM ledger_entries WHERE member_id = :m", m=alice))[0]
    async with app.state.db.transaction() as session:  # entries are append-only: a bug's way round it
        if session.bind.dialect.name == "postgresql":
            await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(text("DELETE FROM ledger_entries WHERE id = :i"), {"i": entry[0]})
        await session.execute(text(
            "INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount, kind, created_at) "
            "VALUES (:t, :a, :m, :s, :n, :k, :c)"),
            {"t": entry[1], "a": entry[2], "m": bob, "s": entry[3], "n": entry[4], "k": entry[5], "c": entry[6]})
    capsys.readouterr()
    await _verify_fails(capsys, f"is filed under member {bob}, not its account's member")


async def test_verify_finds_a_punch_reward_no_stamps_paid_for(client, app, cli_env, capsys):
    """Ten coffees turn ten stamps into one reward: a second reward row for that conversion is a free coffee."""
    store = (await f.create_store(client))["id"]
    member = (await f.enroll(client))["id"]
    r = await client.post("/v1/punch-card-programs", json={
        "name": "Coffee card", "qualifying": {"categories": ["coffee"]}, "stamps_required": 10,
        "reward": {"categories": ["coffee"], "max_value": 600}, "reward_valid_days": 30})
    assert r.status_code == 201, r.text
    program = r.json()["id"]
    sale = await f.commit(client, f.basket(member, store, [f.line("c", "LATTE", "coffee", 10, 400)]))
    assert sale.status_code == 201 and len(sale.json()["earned"]["rewards_issued"]) == 1, sale.text
    assert await run_cli("verify") == 0
    await _sql(app, "INSERT INTO punch_rewards (id, member_id, program_id, status, issued_at, expires_at, issued_by, "
                    "changed_at, stamps_cost, free_skus, free_categories, free_max_value) SELECT id || 'x', "
                    "member_id, program_id, status, issued_at, expires_at, issued_by, changed_at, stamps_cost, "
                    "free_skus, free_categories, free_max_value FROM punch_rewards WHERE member_id = :m", m=member)
    capsys.readouterr()
    await _verify_fails(capsys, f"sale {sale.json()['id']}'s rewards of stamps:{program} cost 20 stamps",
                        "turned 10 into rewards")


def test_sweep_and_verify_say_what_they_do(capsys):
    for command, words in (("sweep", ("expire the points", "Running it again", "Exit status")),
                           ("verify", ("balances in each asset", "drawn from it", "Exit status"))):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert all(w in out for w in words), out


async def test_a_sweep_refuses_a_future_as_of_unless_asked(client, clock, app, cli_env, capsys):
    """A year mistyped in ``--as-of`` would expire now, for good, points still valid until then."""
    member = (await f.enroll(client))["id"]
    await f.adjust(client, member, 50)  # ends in 12 months
    ahead = (clock.now() + timedelta(days=400)).isoformat()
    assert await run_cli("sweep", "--as-of", ahead) == 2
    assert "--allow-future" in capsys.readouterr().err
    assert await f.balance(client, member) == 50
    assert await run_cli("sweep", "--as-of", (clock.now() + timedelta(minutes=4)).isoformat()) == 0
    assert await run_cli("sweep", "--allow-future", "--as-of", ahead) == 0
    assert await f.balance(client, member) == 0


@pytest.mark.parametrize("argv", [["verify"], ["sweep"], ["keys", "create", "--role", "admin"]])
def test_a_command_that_cannot_reach_the_database_says_so_in_one_line(argv, monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"loyalty {argv[0]}: ") and "LOYALTY_DATABASE_URL" in err and "Traceback" not in err


def test_verify_on_a_database_never_migrated_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    assert cli.main(["verify"]) == 2
    assert "loyalty migrate" in capsys.readouterr().err


def test_migrate_to_an_unknown_revision_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert cli.main(["migrate", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
