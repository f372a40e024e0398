"""Three `turnout proxy` instances sharing one real redis-server (`--state`) and one real PostgreSQL
(`--db postgresql://…`, each with its own local outbox): PostgreSQL stopped mid-run loses no row and
ships none twice; the fleet's report, budgets, savings, HTML report and replay read the central ledger."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import openai

from conftest import turnout_cmd


def pending(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("select count(*) from _outbox").fetchone()[0]
    finally:
        conn.close()


def wait_shipped(dbs: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(pending(d) for d in dbs):
        assert time.monotonic() < deadline, [pending(d) for d in dbs]
        time.sleep(0.1)


def call(proxy, i: int) -> str:
    """A mix of what a fleet sends: plain calls, streams, and a provider error now and then."""
    client = proxy.client(max_retries=0)
    msg = [{"role": "user", "content": f"question number {i}"}]
    try:
        if i % 10 == 9:
            client.chat.completions.create(model="error-500", messages=msg)
        elif i % 3 == 0:
            list(client.chat.completions.create(model="gpt-4o", messages=msg, stream=True))
        else:
            client.chat.completions.create(model="gpt-4o-mini", messages=msg, temperature=0)
        return "ok"
    except openai.APIStatusError as e:
        return str(e.status_code)


def turnout_json(*args: str) -> object:
    out = subprocess.run(turnout_cmd(*args, "--format", "json"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_postgres_stopped_mid_run_loses_nothing_and_the_fleet_report_adds_up(
    make_proxy, redis_server, pg_server, tmp_path
):
    cfg = tmp_path / "turnout.toml"
    cfg.write_text('[[budgets]]\nname = "fleet"\nwindow = "day"\nusd = 100\n')
    dbs = [tmp_path / f"outbox{i}.db" for i in range(3)]
    proxies = [
        make_proxy("--db", pg_server.url, "--outbox", str(db), "--state", redis_server.url, "--config", str(cfg), db=db)
        for db in dbs
    ]
    outcomes = [call(proxies[i % 3], i) for i in range(30)]
    assert all(len(p.wait_rows(10)) == 10 for p in proxies)
    wait_shipped(dbs)
    assert pg_server.query("select count(*) from flows") == [(30,)]

    pg_server.stop()  # the central ledger goes away; the proxies go on recording locally
    outcomes += [call(proxies[i % 3], i) for i in range(30, 60)]
    assert sum(len(p.wait_rows(20)) for p in proxies) == 60
    time.sleep(0.5)
    assert sum(pending(d) for d in dbs) >= 30  # waiting in the outboxes
    pg_server.start()
    outcomes += [call(proxies[i % 3], i) for i in range(60, 75)]
    assert all(len(p.wait_rows(25)) == 25 for p in proxies)
    wait_shipped(dbs)
    assert outcomes.count("500") == 7 and outcomes.count("ok") == 68

    local = {r["id"]: r for p in proxies for r in p.rows()}
    assert len(local) == 75
    central = dict(pg_server.query("select id, cost_usd from flows"))
    assert set(central) == set(local)  # no row lost
    (n, distinct), = pg_server.query("select count(*), count(distinct id) from flows")  # fmt: skip
    assert n == distinct == 75  # none twice
    assert all(abs((central[k] or 0) - (r["cost_usd"] or 0)) < 1e-12 for k, r in local.items())
    instances = pg_server.query("select count(distinct instance) from flows")
    assert instances == [(3,)]
    # each instance's outage and recovery, as events rows: a recovery is recorded once the shipper is
    # through again, so its row can follow the flows it shipped by a moment (and ships after them)
    deadline = time.monotonic() + 30
    while True:
        kinds = [k for (k,) in pg_server.query("select kind from events where kind like 'central_%' order by at")]
        if kinds.count("central_recovered") == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    detail = pg_server.query("select instance, kind, message from events where kind like 'central_%' order by at")
    assert kinds.count("central_unavailable") == 3 and kinds.count("central_recovered") == 3, detail

    # the fleet's report is the sum of the instances' reports
    fleet = turnout_json("report", "--db", pg_server.url, "--since", "all")
    parts = [turnout_json("report", "--db", str(d), "--since", "all") for d in dbs]
    assert fleet["total"]["requests"] == sum(p["total"]["requests"] for p in parts) == 75
    assert fleet["total"]["errors"] == sum(p["total"]["errors"] for p in parts) == 7
    assert abs(fleet["total"]["cost_usd"] - sum(p["total"]["cost_usd"] for p in parts)) < 1e-9
    by_model = {g["group"]: g["requests"] for g in fleet["groups"]}
    assert by_model == {"gpt-4o": 22, "gpt-4o-mini": 46, "error-500": 7}

    # budgets rebuilt from the central ledger: the fleet's spend, not one instance's
    (budget,) = turnout_json("budgets", "--db", pg_server.url, "--config", str(cfg))
    assert abs(budget["spent_usd"] - fleet["total"]["cost_usd"]) < 1e-9
    assert budget["spent_requests"] == 75 - 7  # failed calls with no usage are not spend

    savings = turnout_json("savings", "--db", pg_server.url)
    assert savings["totals"]["all_calls"] == 75

    html = tmp_path / "fleet.html"
    subprocess.run(
        turnout_cmd("report", "--db", pg_server.url, "--since", "all", "--html", str(html)),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert "75" in html.read_text() and pg_server.url.split("@")[-1] in html.read_text()


def test_rows_of_a_sigterm_drain_ship_and_replay_reads_the_central_recordings(make_proxy, pg_server, tmp_path):
    db = tmp_path / "outbox.db"
    p = make_proxy("--db", pg_server.url, "--outbox", str(db), db=db)
    q = [{"role": "user", "content": "what is the capital of France?"}]
    answer = p.client().chat.completions.create(model="gpt-4o", messages=q, temperature=0)
    p.stop()  # SIGTERM right after the call: the shutdown drain ships it
    assert pending(db) == 0
    assert pg_server.query("select count(*) from flows") == [(1,)]
    assert pg_server.query("select count(*) from cache_entries") == [(1,)]

    # a CI job replays from the central recordings, with no provider at all
    replay = make_proxy("--replay", pg_server.url, with_upstream=False)
    again = replay.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=q, temperature=0)
    assert again.headers["x-turnout-cache"] == "replay"
    assert again.parse().choices[0].message.content == answer.choices[0].message.content


def test_a_central_ledger_that_is_down_at_start_catches_up(make_proxy, pg_server, tmp_path):
    db = tmp_path / "outbox.db"
    pg_server.stop()
    p = make_proxy("--db", pg_server.url, "--outbox", str(db), "--set", "turnout_central_drain=0", db=db)
    for i in range(5):
        p.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"hi {i}"}])
    assert len(p.wait_rows(5)) == 5
    p.stop()
    waiting = sqlite3.connect(db).execute("select count(distinct pk) from _outbox where tbl = 'flows'").fetchone()
    assert waiting == (5,)  # kept for the next start
    pg_server.start()
    cfg = tmp_path / "turnout.toml"
    cfg.write_text(f'[ledger]\ncentral = "{pg_server.url}"\n')  # the config's way to say --db postgresql://…
    again = make_proxy("--config", str(cfg), db=db)
    wait_shipped([db])
    assert pg_server.query("select count(*) from flows") == [(5,)]
    again.stop()
    # back to the local ledger only: the outbox goes; turning the central ledger on again ships it all (again)
    make_proxy(db=db).stop()
    assert "_outbox" not in {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master")}
    out = subprocess.run(turnout_cmd("report", "--db", "postgresql://turnout@127.0.0.1:1/x"), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "central ledger postgresql://turnout@127.0.0.1:1/x unavailable" in out.stderr
