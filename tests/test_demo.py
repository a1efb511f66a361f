"""``loyalty demo`` (API.md, "Running it") and commands on a database no server has prepared yet (SQLite and
PostgreSQL)."""

from __future__ import annotations

import re

from tests import factories as f
from tests.conftest import wipe
from tests.server import run_cli


async def test_demo_loads_a_program_to_try_once(client, make_client, app, cli_env, capsys):
    assert await run_cli("demo") == 0
    out = capsys.readouterr().out
    assert "12 members with" in out
    keys = dict(re.findall(r"demo: (pos key, Berlin|pos key, Shanghai|app key): (lk_\S+)", out))
    cards = re.findall(r"card (\d+)", out)
    assert len(keys) == 3 and len(cards) == 3

    berlin, shanghai = make_client(keys["pos key, Berlin"]), make_client(keys["pos key, Shanghai"])
    r = await berlin.get("/v1/members", params={"card_number": cards[0]})
    assert r.status_code == 200 and r.json()["data"][0]["name"] == "Anna Schmidt", r.text
    member = r.json()["data"][0]["id"]
    sales = (await berlin.get(f"/v1/members/{member}/transactions")).json()["data"]
    assert sales and {s["store_id"] for s in sales} == {"demo-berlin"}
    assert (await shanghai.get(f"/v1/members/{member}/transactions")).json()["data"] == []  # another store's
    q = await berlin.post("/v1/checkout/quote", json=f.basket(member, "demo-berlin", [
        f.line("1", "LATTE", "coffee", 1, 380)], currency=(await client.get("/v1/program")).json()["currency"]))
    assert q.status_code == 200, q.text
    assert q.json()["earn"]["points"] == 7  # 3.80 at twice the base rate on coffee: 7.6, floored
    assert any(o["kind"] == "voucher" for o in q.json()["offers"])  # her welcome voucher

    report = (await client.get("/v1/reports/redemptions")).json()
    assert report["vouchers"]["issued"] >= 3 and report["points"]["issued"] > 0
    assert f.points_outstanding(report["points"]) == await f.held(app, "points")
    assert (await make_client(keys["app key"]).get(f"/v1/members/{member}/wallet")).status_code == 200

    members = len((await client.get("/v1/members", params={"card_number": cards[1]})).json()["data"])
    assert await run_cli("demo") == 0  # once: the second run changes nothing
    assert "already loaded" in capsys.readouterr().out
    assert len((await client.get("/v1/members", params={"card_number": cards[1]})).json()["data"]) == members
    assert await run_cli("verify") == 0


async def test_commands_on_a_database_no_server_has_prepared(database_url, table_names, cli_env, capsys, tmp_path):
    """A sweep or an import on a freshly migrated database makes the default program first, as a server does at
    start (a sweep had stopped on a traceback)."""
    await wipe(database_url, table_names)
    assert await run_cli("sweep") == 0
    assert "segmented 0 members" in capsys.readouterr().out
    await wipe(database_url, table_names)
    members = tmp_path / "members.jsonl"
    members.write_text('{"external_ref": "crm-1", "name": "Jane Doe"}\n')
    assert await run_cli("import", str(members)) == 0
    assert "1 enrolled" in capsys.readouterr().out
