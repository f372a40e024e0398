"""`turnout proxy --workers 2`: two mitmdump processes on one port sharing one Redis and one ledger."""

from __future__ import annotations

import signal
import subprocess

import openai

from conftest import turnout_cmd

MSG = [{"role": "user", "content": "hello there"}]


def test_two_workers_share_the_port_the_budget_and_the_ledger(make_proxy, redis_server, tmp_path):
    cfg = tmp_path / "turnout.toml"
    cfg.write_text('[[budgets]]\nname = "d"\nwindow = "day"\nrequests = 12\n')
    p = make_proxy("--workers", "2", "--state", redis_server.url, "--config", str(cfg), "--set",
                   "turnout_cache=false", "-v")  # fmt: skip
    outcomes = []
    for i in range(20):  # a new client (a new connection) per call: the kernel spreads them over the workers
        client = p.client(max_retries=0)
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"hi {i}"}])
            outcomes.append("ok")
        except openai.RateLimitError:
            outcomes.append("blocked")
        client.close()
    assert outcomes == ["ok"] * 12 + ["blocked"] * 8  # one budget for both workers
    rows = p.wait_rows(20)
    assert len(rows) == 20 and sum(r["blocked_by"] == "budget:d" for r in rows) == 8
    served = {
        w for w in ("[worker 0]", "[worker 1]") if any(w in line and "client connect" in line for line in p.output)
    }
    assert served == {"[worker 0]", "[worker 1]"}, "".join(p.output[-40:])
    assert p.stop(signal.SIGTERM) == 0  # both drained and exited cleanly


def test_workers_without_shared_state_are_refused(tmp_path):
    out = subprocess.run(
        turnout_cmd("proxy", "--workers", "2", "--port", "0", "--db", str(tmp_path / "l.db")),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "--state" in out.stderr


def test_workers_with_the_config_urls_ship_one_ledger_once(make_proxy, redis_server, pg_server, tmp_path):
    """`[state] url` and `[ledger] central` in the config: the parent ships the workers' one ledger."""
    cfg = tmp_path / "turnout.toml"
    cfg.write_text(f'[state]\nurl = "{redis_server.url}"\n[ledger]\ncentral = "{pg_server.url}"\n')
    db = tmp_path / "outbox.db"
    p = make_proxy("--workers", "2", "--config", str(cfg), db=db)
    for i in range(10):
        client = p.client(max_retries=0)
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"hi {i}"}])
        client.close()
    assert len(p.wait_rows(10)) == 10
    assert p.stop(signal.SIGTERM) == 0  # the parent's last drain ships what the workers wrote last
    assert pg_server.query("select count(*), count(distinct id), count(distinct instance) from flows") == [(10, 10, 1)]
