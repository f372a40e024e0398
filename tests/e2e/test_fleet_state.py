"""Three `turnout proxy` instances sharing one real redis-server (`--state`): one budget, one loop breaker
and one cache across all of them, and each failure policy when Redis dies mid-run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sqlite3
import time
from pathlib import Path

import openai
import pytest

from conftest import turnout_cmd

MSG = [{"role": "user", "content": "hello there"}]
NO_CACHE = ("--set", "turnout_cache=false")
# one call's worst case as reserved: prompt (< 20 tokens) x $2.5/M + 40 output tokens x $10/M (gpt-4o)
WORST = 20 * 2.5e-6 + 40 * 10e-6


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "turnout.toml"
    p.write_text(text)
    return p


def code(e: openai.APIStatusError) -> str | None:
    return (e.body or {}).get("code") if isinstance(e.body, dict) else None


# Three proxies, Redis, the test server and a 60-call burst share two cores here: the loop of a proxy can
# stall past the default 0.5 s state timeout on a slow machine, which is a loaded machine, not an outage.
# The tests of outages below stop Redis outright (refused at once), so they do not depend on this bound.
PATIENT = ("--set", "turnout_state_timeout_ms=5000")


def fleet(make_proxy, redis_server, *args: str, n: int = 3):
    return [make_proxy("--state", redis_server.url, *PATIENT, *args) for _ in range(n)]


def test_a_budget_is_one_total_across_three_instances(make_proxy, redis_server, tmp_path):
    limit = 0.002
    cfg = write(tmp_path, f'[[budgets]]\nname = "fleet"\nwindow = "day"\nusd = {limit}\n')
    proxies = fleet(make_proxy, redis_server, "--config", str(cfg), *NO_CACHE)
    clients = [p.async_client(max_retries=0) for p in proxies]

    async def one(i: int) -> str:
        try:
            await clients[i % 3].chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"hello there {i}"}], max_tokens=40,
                extra_headers={"x-test-hang-ms": "200"},
            )  # fmt: skip
            return "ok"
        except openai.RateLimitError as e:
            assert code(e) == "budget_exceeded"
            return "blocked"

    async def burst() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(60)))

    outcomes = asyncio.run(burst())
    rows = [r for p in proxies for r in p.wait_rows(20)]
    assert len(rows) == 60
    spent = sum(r["cost_usd"] or 0 for r in rows)
    # Each instance alone would admit ~13 calls ($0.00015 each) against its own $0.002; together they admit
    # while spend + reservations < limit, so the fleet passes the limit by less than one call's worst case.
    assert spent <= limit + WORST, (spent, outcomes.count("ok"))
    assert outcomes.count("blocked") >= 40
    assert len({p.port for p, r in zip(proxies, range(3))}) == 3
    assert all(any(r["blocked_by"] is None for r in p.rows()) for p in proxies)  # every instance admitted some
    # `turnout budgets --state` shows the fleet's total (the ledger given only names the counters)
    out = subprocess.run(
        turnout_cmd("budgets", "--state", redis_server.url, "--config", str(cfg), "--db", str(proxies[0].db),
                    "--format", "json"),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (fleet_status,) = json.loads(out)
    assert fleet_status["spent_requests"] == 60 - outcomes.count("blocked")
    assert abs(fleet_status["spent_usd"] - spent) < 1e-5 and fleet_status["reserved_requests"] == 0


def test_a_call_paid_on_one_instance_is_a_hit_on_another_and_not_for_another_key(make_proxy, redis_server):
    a, b, _ = fleet(make_proxy, redis_server)
    q = [{"role": "user", "content": "what is the capital of France?"}]
    first = a.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=q, temperature=0)
    assert first.headers["x-turnout-cache"] == "miss"
    deadline = time.monotonic() + 5
    while True:  # the answer is shared off the call's path, after its row is recorded
        hit = b.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=q, temperature=0)
        if hit.headers["x-turnout-cache"] == "hit" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert hit.headers["x-turnout-cache"] == "hit"
    assert hit.parse().choices[0].message.content == first.parse().choices[0].message.content
    other = b.client(api_key="sk-test-key-0002").chat.completions.with_raw_response.create(
        model="gpt-4o", messages=q, temperature=0
    )
    assert other.headers["x-turnout-cache"] == "miss"  # another tenant never sees it
    rows = b.wait_rows(2)
    assert [r["cache"] for r in rows] == ["hit", "miss"] and rows[0]["cost_usd"] == 0


def test_a_retry_loop_spread_over_instances_trips_the_breaker(make_proxy, redis_server, tmp_path):
    cfg = write(tmp_path, '[breakers]\nloop_threshold = 3\nloop_window = "5s"\n')
    proxies = fleet(make_proxy, redis_server, "--config", str(cfg), *NO_CACHE)
    same = [{"role": "user", "content": "are we there yet?"}]
    outcomes = []
    for i in range(5):  # at most 2 on any one instance: none would trip alone
        try:
            proxies[i % 3].client(max_retries=0).chat.completions.create(model="gpt-4o", messages=same)
            outcomes.append("ok")
        except openai.RateLimitError as e:
            outcomes.append(code(e))
    assert outcomes == ["ok", "ok", "ok", "loop_detected", "loop_detected"]


def test_redis_down_mid_run_each_policy_then_recovery(make_proxy, redis_server, tmp_path):
    cfg = write(
        tmp_path,
        '[[budgets]]\nname = "strict"\nscope = "team"\nmatch = "payments"\nusd = 100\n'
        '[[budgets]]\nname = "soft"\nscope = "team"\nmatch = "search"\nusd = 100\non_state_error = "open"\n',
    )
    a, b = fleet(make_proxy, redis_server, "--config", str(cfg), *NO_CACHE, n=2)

    def call(p, team: str) -> str:
        try:
            p.client(max_retries=0).chat.completions.create(
                model="gpt-4o", messages=MSG, extra_headers={"x-turnout-team": team}
            )
            return "ok"
        except openai.APIStatusError as e:
            return f"{e.status_code} {code(e)}"

    assert [call(a, "payments"), call(b, "search")] == ["ok", "ok"]
    redis_server.stop()
    t0 = time.monotonic()
    down = [call(a, "payments"), call(b, "search"), call(b, "payments"), call(a, "search")]
    assert down == ["503 state_unavailable", "ok", "503 state_unavailable", "ok"]
    assert time.monotonic() - t0 < 5  # no request waits long on a dead Redis
    redis_server.start()  # back, empty
    deadline = time.monotonic() + 10
    while call(a, "payments") != "ok":
        assert time.monotonic() < deadline, "never recovered"
        time.sleep(0.3)
    assert call(b, "payments") == "ok"
    for p in (a, b):
        assert p.proc is not None and p.proc.poll() is None  # no crash
    a.stop()
    conn = sqlite3.connect(a.db)
    kinds = [k for (k,) in conn.execute("select kind from events order by id")]
    msg = conn.execute("select error from flows where status_code = 503").fetchone()[0]
    conn.close()
    assert "state_unavailable" in kinds and "state_recovered" in kinds
    assert "strict" in msg and "cannot be checked" in msg


def test_a_cold_redis_is_refilled_from_the_ledger(make_proxy, redis_server, tmp_path):
    cfg = write(tmp_path, '[[budgets]]\nname = "d"\nwindow = "day"\nrequests = 3\n')
    p = make_proxy("--state", redis_server.url, "--config", str(cfg), *NO_CACHE)
    c = p.client(max_retries=0)
    for _ in range(3):
        c.chat.completions.create(model="gpt-4o", messages=MSG)
    redis_server.restart()  # every counter gone
    time.sleep(0.3)
    deadline = time.monotonic() + 10
    while True:
        try:
            c.chat.completions.create(model="gpt-4o", messages=MSG)
            pytest.fail("a cold Redis forgot the day's spend")
        except openai.APIStatusError as e:
            if code(e) == "budget_exceeded":
                break
            assert code(e) == "state_unavailable" and time.monotonic() < deadline
            time.sleep(0.3)
