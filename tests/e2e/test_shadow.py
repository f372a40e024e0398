"""Shadow evaluations through a real `turnout proxy` and the official SDK: observe-mode evidence,
the client path left alone, the daily cap, what is never shadowed, monitoring with auto-revert."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import turnout_cmd

ROUTE_ALL = "[router]\nthreshold = 0.0\nnever_route_tasks = []\n"
KEY = "sk-test-shadow-secret-7f3a9c0d"


def config(tmp_path: Path, shadow: str, router: str = ROUTE_ALL) -> str:
    path = tmp_path / "turnout.toml"
    path.write_text(router + "\n[shadow]\n" + shadow)
    return str(path)


def evals(db: Path, where: str = "1") -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"select * from shadow_evals where {where} order by id")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_evals(db: Path, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = evals(db)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def model_of(request: dict[str, Any]) -> Any:
    """The model a request the test server received asked for (other tests send bodies that are not JSON objects)."""
    body = request["body"]
    return body.get("model") if isinstance(body, dict) else None


def ask(client, content: str, **kw: Any):
    return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": content}], **kw)


WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
           {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
CASES = {
    # prompt (the test server's directives say what each model answers) → the verdict the evidence must show
    "Classify the sentiment: I love it. [[answer: positive]]": ("exact", "pass"),
    "Classify the sentiment: awful. [[answer: negative]] [[cheap-answer: positive]]": ("exact", "fail"),
    "Solve: 12 + 30 = ? Give the final number. [[answer: The answer is 42.]] [[cheap-answer: I think it is 41.]]": ("numeric", "fail"),
    "Solve: 40 + 2 = ? Give the final number. [[answer: So 42.]] [[cheap-answer: The total is 42]]": ("numeric", "pass"),
    "Write a paragraph about the sea. [[answer: The sea covers most of the planet and shapes its climate.]] [[cheap-answer: The sea is wet. #worse]]": ("judge", "fail"),
    "Write a paragraph about rivers. [[answer: Rivers carry water to the sea.]] [[cheap-answer: Rivers flow downhill into seas.]]": ("judge", "pass"),
    "Write a paragraph about lakes. #biased [[answer: Lakes are still bodies of fresh water.]] [[cheap-answer: Lakes are inland bodies of water, mostly fresh.]]": ("judge", "tie"),
}  # fmt: skip


def test_observe_mode_shadows_measure_what_the_server_was_told(make_proxy, tmp_path, upstream):
    cfg = config(tmp_path, 'sample = 1.0\nexplore = 0.0\njudge_model = "gpt-4o"\n')
    proxy = make_proxy("--config", cfg, shadow=True)
    assert any("shadow evaluations on" in line and "$1/day" in line for line in proxy.output)
    client = proxy.client(api_key=KEY)
    for prompt in CASES:
        ask(client, prompt)
    json_mode = {"type": "json_object"}
    ask(
        client,
        'Extract as JSON. [[answer: {"name": "Ada", "age": 36}]] [[cheap-answer: {"name": "Ada", "age": 37}]]',
        response_format=json_mode,
    )
    ask(client, 'Extract as JSON. [[answer: {"name": "Bob"}]] [[cheap-answer: {"name": ]]', response_format=json_mode)
    ask(client, 'Weather in Paris? [[tool: get_weather {"city": "Paris"}]] [[cheap-tool: get_time {}]]', tools=WEATHER)
    ask(client, 'Weather in Rome? [[tool: get_weather {"city": "Rome"}]]', tools=WEATHER)
    stream = ask(client, "Classify the sentiment: fine. [[answer: neutral]] [[cheap-answer: negative]]", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip() == "neutral"
    n = len(CASES) + 5
    rows = wait_evals(proxy.db, n)
    assert len(rows) == n, rows
    flows = {r["id"]: r for r in proxy.rows()}
    by_prompt = {json.loads(flows[r["flow_id"]]["request_body"])["messages"][0]["content"]: r for r in rows}
    for prompt, (comparator, verdict) in CASES.items():
        r = by_prompt[prompt]
        assert (r["comparator"], r["verdict"]) == (comparator, verdict), (prompt, r["detail"])
    others = sorted((r["comparator"], r["verdict"]) for p, r in by_prompt.items() if p not in CASES)
    assert others == [
        ("exact", "fail"),
        ("json", "fail"),
        ("json", "fail"),
        ("tool_calls", "fail"),
        ("tool_calls", "pass"),
    ]
    for r in rows:
        assert r["mode"] == "observe" and r["decision"] == "route"
        assert (r["reference_model"], r["candidate_model"]) == ("gpt-4o", "gpt-4o-mini")
        assert r["cost_usd"] > 0 and r["latency_ms"] > 0
    judged = [r for r in rows if r["comparator"] == "judge"]
    assert all(r["judge"] == "judge-v1" and r["judge_cost_usd"] > 0 for r in judged)
    # turnout's own calls are rows of their own, marked and attributed, and the client's rows are untouched
    own = proxy.rows("origin is not null")
    assert sorted({(r["origin"], r["feature"]) for r in own}) == [
        ("judge", "turnout:judge"),
        ("shadow", "turnout:shadow"),
    ]
    assert len([r for r in own if r["origin"] == "shadow"]) == n and len(
        [r for r in own if r["origin"] == "judge"]
    ) == 2 * len(judged)
    assert all(
        r["origin"] is None and r["model"] == "gpt-4o"
        for r in flows.values()
        if r["id"] in {e["flow_id"] for e in rows}
    )
    # mitmweb's flow comment shows the verdict: checked through the dump of flows is mitmweb's job; the ledger has it
    proxy.stop()
    # the key is nowhere on disk: not in the ledger, its WAL, or anything else the run wrote
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in "".join(proxy.output)

    out = subprocess.run(turnout_cmd("savings", "--db", str(proxy.db), "--format", "json", "--config", cfg),
                         capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(out.stdout)
    group = next(g for g in data["groups"] if g["task"] == "classification")
    for key in ("shadowed", "passed", "pass_rate", "pass_rate_low", "recommendation"):
        assert key in group, group
    assert group["shadowed"] == 3 and group["passed"] == 1 and group["recommendation"] == "keep"
    quality = data["quality"]
    assert quality["target_quality"] == 0.95 and "saving_per_month_cleared_usd" in quality
    assert quality["saving_per_month_all_usd"] >= quality["saving_per_month_cleared_usd"] >= 0
    assert {"feature", "shadowed", "pass_rate_low"} <= set(data["by_feature"][0])
    assert {"template_fp", "shadowed", "recommendation"} <= set(data["by_template"][0])
    wide = {**os.environ, "COLUMNS": "240"}
    table = subprocess.run(
        turnout_cmd("savings", "--db", str(proxy.db), "--config", cfg),
        capture_output=True,
        text=True,
        check=True,
        env=wide,
    ).stdout
    assert "pass rate" in table and "keep" in table
    report = subprocess.run(
        turnout_cmd("report", "--db", str(proxy.db), "--since", "1d"), capture_output=True, text=True, check=True
    ).stdout
    assert "Quality (shadow evaluations)" in report
    page = tmp_path / "report.html"
    turnout(["report", "--db", str(proxy.db), "--since", "1d", "--html", str(page)])
    html = page.read_text()
    assert "<h2>Routing decisions</h2>" in html and "<h2>Quality (shadow evaluations)</h2>" in html and ">keep<" in html


def turnout(args: list[str]) -> str:
    return subprocess.run(turnout_cmd(*args), capture_output=True, text=True, check=True).stdout


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without what differs between any two runs (ids, clocks, the test server's answer ids)."""
    drop = {"id", "started_at", "ended_at", "latency_ms", "ttft_ms", "client_addr", "cache_key"}
    out = {k: v for k, v in row.items() if k not in drop}
    if out.get("response_body"):
        body = json.loads(out["response_body"])
        if isinstance(body, dict):
            body.pop("id", None), body.pop("created", None)
        out["response_body"] = body
    return out


def test_shadowing_leaves_the_client_path_alone(make_proxy, tmp_path):
    on = make_proxy("--config", config(tmp_path, "sample = 1.0\n"), shadow=True)
    off = make_proxy("--config", config(tmp_path, "sample = 1.0\n"), shadow=False)
    answers: dict[str, list[Any]] = {"on": [], "off": []}
    for name, proxy in (("on", on), ("off", off)):
        client = proxy.client(api_key=KEY)
        r = ask(client, "Classify: ok [[answer: positive]] [[cheap-answer: negative]]", temperature=0.3)
        answers[name].append((r.choices[0].message.content, r.model, r.usage.prompt_tokens))
        s = ask(client, "Classify: meh [[answer: neutral]] [[cheap-answer: negative]]", stream=True)
        answers[name].append("".join(c.choices[0].delta.content or "" for c in s if c.choices))
        with pytest.raises(openai.InternalServerError):
            client.with_options(max_retries=0).chat.completions.create(
                model="error-500", messages=[{"role": "user", "content": "x"}]
            )
    assert answers["on"] == answers["off"]
    assert len(wait_evals(on.db, 2)) == 2 and evals(off.db) == []
    rows_on = [comparable(r) for r in on.wait_rows(3, "origin is null")]
    rows_off = [comparable(r) for r in off.wait_rows(3, "origin is null")]
    for a, b in zip(rows_on, rows_off):
        assert {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)} == {}


def test_the_daily_cap_stops_shadows_and_concurrency_cannot_overshoot(make_proxy, tmp_path, upstream):
    # gpt-4o-mini's worst case for 1000 output tokens is about $0.0006: a $0.0015 cap fits two at a time
    proxy = make_proxy(
        "--config", config(tmp_path, "sample = 1.0\nusd_per_day = 0.0015\nconcurrency = 8\n"), shadow=True
    )
    client = proxy.async_client(api_key=KEY, default_headers={"x-test-hang-ms": "400"})

    async def burst() -> None:
        await asyncio.gather(*(
            client.chat.completions.create(model="gpt-4o", max_tokens=1000,
                                           messages=[{"role": "user", "content": f"Classify #{i} [[answer: yes]]"}])
            for i in range(10)
        ))  # fmt: skip

    asyncio.run(burst())
    rows = wait_evals(proxy.db, 10)
    capped = [r for r in rows if r["verdict"] == "unknown" and "daily cap" in r["detail"]]
    ran = [r for r in rows if r["verdict"] != "unknown"]
    assert len(rows) == 10 and capped and ran, [(r["verdict"], r["detail"]) for r in rows]
    own = proxy.rows("origin = 'shadow'")
    assert len(own) == len(ran)
    assert sum(r["cost_usd"] or 0 for r in proxy.rows("origin is not null")) <= 0.0015


def test_stateful_opted_out_and_failed_calls_are_never_shadowed(make_proxy, tmp_path, upstream):
    cfg = config(tmp_path, 'sample = 1.0\nexplore = 1.0\nnever_features = ["billing"]\n')
    proxy = make_proxy("--config", cfg, "--set", "turnout_cache_nondeterministic=false", shadow=True)
    client = proxy.client(api_key=KEY, max_retries=0)
    before = sum(1 for r in upstream.requests if model_of(r) == "gpt-4o-mini")
    ask(client, "Stored call [[answer: a]]", store=True)
    ask(client, "Opted out [[answer: b]]", extra_headers={"x-turnout-shadow": "no"})
    ask(client, "Billing [[answer: c]]", extra_headers={"x-turnout-feature": "billing"})
    client.responses.create(model="gpt-4o", input="Chained [[answer: d]]", previous_response_id="resp_123")
    client.responses.create(model="gpt-4o", input="Search [[answer: e]]", tools=[{"type": "web_search_preview"}])
    ask(client, "Cached [[answer: f]]", temperature=0)
    ask(client, "Cached [[answer: f]]", temperature=0)  # a cache hit: not shadowed (its first call is)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="error-500", messages=[{"role": "user", "content": "failed"}])
    ask(client, "Plain [[answer: g]]")  # the one ordinary call after all of them: it is shadowed
    rows = wait_evals(proxy.db, 2)
    time.sleep(1.0)  # anything else would have arrived by now
    rows = evals(proxy.db)
    shadowed = {
        json.loads(r["request_body"])["messages"][0]["content"]
        for r in proxy.rows()
        if r["id"] in {e["flow_id"] for e in rows}
    }
    assert shadowed == {"Cached [[answer: f]]", "Plain [[answer: g]]"}, shadowed
    after = sum(1 for r in upstream.requests if model_of(r) == "gpt-4o-mini")
    assert after - before == 2


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_monitor_mode_raises_an_event_and_auto_revert_stops_routing(make_proxy, tmp_path):
    cfg = config(tmp_path, "sample = 1.0\nauto_revert = true\nmin_evals = 3\n")
    port = free_port()
    proxy = make_proxy("--config", cfg, "--mode", "route", "--metrics-port", str(port), shadow=True)
    client = proxy.client(api_key=KEY, default_headers={"x-turnout-cache": "no"})  # each call answered anew
    prompt = "Classify the sentiment: great. [[answer: positive]] [[cheap-answer: negative]]"
    for _ in range(3):
        r = ask(client, prompt)
        assert r.choices[0].message.content == "negative"  # routed: the cheaper model answered
    rows = wait_evals(proxy.db, 3)
    assert [(r["mode"], r["reference_model"], r["candidate_model"], r["verdict"]) for r in rows] == [
        ("monitor", "gpt-4o", "gpt-4o-mini", "fail")
    ] * 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _events(proxy.db, "quality_degraded"):
        time.sleep(0.1)
    (event,) = _events(proxy.db, "quality_degraded")
    assert "below target" in event["message"] and json.loads(event["data"])["reverted"] is True
    assert (
        'turnout_quality_pass_rate{candidate="gpt-4o-mini",provider="openai",reference="gpt-4o",task="classification"} 0.0'
        in scrape(port)
    )
    r = ask(client, prompt)
    assert r.choices[0].message.content == "positive"  # routing for the group stopped: the requested model answered
    last = proxy.wait_rows(4, "origin is null")[-1]
    assert last["routed"] is None and last["decision"] == "keep" and "reverted" in last["route_reason"]
    assert any(
        "routed quality for gpt-4o → gpt-4o-mini (classification) is below target" in line for line in proxy.output
    )
    # a restart does not undo the revert: the ledger's quality events say which groups stay kept
    proxy.stop()
    again = make_proxy("--config", cfg, "--mode", "route", db=proxy.db, shadow=True)
    assert any("1 routing group(s) stay reverted" in line for line in again.output)
    r = ask(again.client(api_key=KEY, default_headers={"x-turnout-cache": "no"}), prompt)
    assert r.choices[0].message.content == "positive"
    assert again.wait_rows(5, "origin is null")[-1]["routed"] is None


def _events(db: Path, kind: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("select * from events where kind = ?", (kind,))]
    finally:
        conn.close()


def test_a_silent_model_update_is_an_event(make_proxy, tmp_path):
    proxy = make_proxy("--config", config(tmp_path, "sample = 0.0\nexplore = 0.0\n"), shadow=True)
    client = proxy.client(api_key=KEY)
    ask(client, "Classify: a [[answer: x]]")
    ask(client, "Classify: b [[answer: x]] [[fingerprint: fp_new_weights]]")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _events(proxy.db, "model_changed"):
        time.sleep(0.1)
    (event,) = _events(proxy.db, "model_changed")
    assert "fp_new_weights" in event["message"] and "gpt-4o" in event["message"]


ANTHROPIC = ("--set", "turnout_hosts=api.openai.com", "--set", "turnout_hosts=api.anthropic.com")


def test_anthropic_calls_are_shadowed_and_judged_by_another_providers_model(
    make_proxy, tmp_path, monkeypatch, upstream
):
    monkeypatch.setenv("TURNOUT_TEST_JUDGE_KEY", "sk-judge-key-from-the-proxys-environment")
    cfg = config(
        tmp_path,
        'sample = 1.0\njudge_model = "gpt-4o-mini"\njudge_provider = "openai"\njudge_api_key_env = "TURNOUT_TEST_JUDGE_KEY"\n',
    )
    proxy = make_proxy("--config", cfg, *ANTHROPIC, shadow=True)
    client = proxy.anthropic_client(api_key="sk-ant-shadow-secret-0000", max_retries=0)
    short = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "Classify: nice [[answer: positive]]"}],
    )
    assert short.content[0].text == "positive"
    client.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=[{"role": "user", "content":
                           "Describe Paris. [[answer: Paris is the capital of France, on the Seine.]] [[cheap-answer: Paris is a city. #worse]]"}])  # fmt: skip
    rows = wait_evals(proxy.db, 2)
    assert sorted((r["provider"], r["candidate_model"], r["comparator"], r["verdict"]) for r in rows) == [
        ("anthropic", "claude-haiku-4-5", "exact", "pass"),
        ("anthropic", "claude-haiku-4-5", "judge", "fail"),
    ]
    shadow_calls = [r for r in upstream.requests if model_of(r) == "claude-haiku-4-5"]

    def header(r: dict[str, Any], name: str) -> str | None:
        return next((v for k, v in r["headers"].items() if k.lower() == name), None)

    original = next(r for r in reversed(upstream.requests) if model_of(r) == "claude-sonnet-4-5")
    credential = header(original, "x-api-key") or header(original, "authorization")
    assert "sk-ant-shadow-secret-0000" in credential
    assert [header(r, "x-api-key") or header(r, "authorization") for r in shadow_calls[-2:]] == [credential] * 2
    judged = [r for r in upstream.requests if model_of(r) == "gpt-4o-mini"][-2:]
    assert [header(r, "authorization") for r in judged] == ["Bearer sk-judge-key-from-the-proxys-environment"] * 2
    assert {r["origin"] for r in proxy.rows("origin is not null")} == {"shadow", "judge"}


def test_a_shadow_that_times_out_is_unknown_and_the_client_never_waits_for_it(make_proxy, tmp_path):
    proxy = make_proxy("--config", config(tmp_path, 'sample = 1.0\ntimeout = "0.5s"\n'), shadow=True)
    client = proxy.client(api_key=KEY, default_headers={"x-test-hang-ms": "800"})
    started = time.monotonic()
    r = ask(client, "Classify: slow [[answer: positive]]")
    assert r.choices[0].message.content == "positive" and time.monotonic() - started < 5
    (row,) = wait_evals(proxy.db, 1)
    assert (row["verdict"], row["comparator"]) == ("unknown", "none") and "timed out after 0.5s" in row["detail"]
    (own,) = proxy.wait_rows(1, "origin = 'shadow'")
    assert own["error"].startswith("timed out") and own["status_code"] is None
    (client_row,) = proxy.rows("origin is null")
    assert client_row["error"] is None and client_row["status_code"] == 200


def test_sigterm_with_shadows_in_flight_exits_cleanly(make_proxy, tmp_path):
    proxy = make_proxy("--config", config(tmp_path, "sample = 1.0\n"), shadow=True)
    client = proxy.client(api_key=KEY)
    for i in range(3):
        # the client's answer comes at once; its shadow hangs at the server for 3 s
        ask(client, f"Classify #{i} [[answer: yes]]", extra_headers={"x-test-hang-ms": "0"})
    slow = proxy.client(api_key=KEY, default_headers={"x-test-hang-ms": "3000"})
    import threading

    t = threading.Thread(target=lambda: ask(slow, "Classify: last [[answer: yes]]"), daemon=True)
    t.start()
    time.sleep(3.5)  # answered; its shadow now hangs
    assert proxy.stop() == 0
    out = "".join(proxy.output)
    assert "Traceback" not in out and "Task was destroyed" not in out, out
    assert len(proxy.rows("origin is null")) == 4


def test_no_shadows_while_recording_a_test_suite(make_proxy, tmp_path, upstream):
    proxy = make_proxy("--config", config(tmp_path, "sample = 1.0\n"), "--set", "turnout_record=true", shadow=True)
    assert any("shadow evaluations off while recording" in line for line in proxy.output)
    before = sum(1 for r in upstream.requests if model_of(r) == "gpt-4o-mini")
    ask(proxy.client(api_key=KEY), "Classify: recorded [[answer: yes]]")
    time.sleep(0.5)
    assert sum(1 for r in upstream.requests if model_of(r) == "gpt-4o-mini") == before and evals(proxy.db) == []


def test_the_evidence_policy_routes_exactly_the_groups_the_evidence_clears(make_proxy, tmp_path):
    db = tmp_path / "ledger.db"
    sentiment = "Classify the sentiment of the customer's review. Reply with one word."
    french = "Translate the user's message into French."
    observe = make_proxy("--config", config(tmp_path, 'sample = 1.0\njudge_model = "gpt-4o"\n'), db=db, shadow=True)
    client = observe.client(api_key=KEY, default_headers={"x-turnout-cache": "no"})

    def call(c, system: str, user: str):
        return c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": system}, {"role": "user", "content": user}]
        )

    for i in range(85):  # the cheaper model always agrees: 85/85, lower bound above 0.95
        call(client, sentiment, f"Review {i}: great value. [[answer: positive]]")
    for i in range(12):  # the cheaper model gets every other one wrong
        wrong = "[[cheap-answer: Au revoir #worse]]" if i % 2 else ""  # the judge's rule: #worse loses
        call(client, french, f"Good morning {i}. [[answer: Bonjour {i}]] {wrong}")
    assert len(wait_evals(db, 97, timeout=60)) == 97
    observe.stop()

    cfg = tmp_path / "evidence.toml"
    cfg.write_text(
        '[router]\nthreshold = 1.0\npolicy = "evidence"\nnever_route_tasks = []\n\n[shadow]\nenabled = false\n'
    )
    route = make_proxy("--config", str(cfg), "--mode", "route", db=db)
    client = route.client(api_key=KEY, default_headers={"x-turnout-cache": "no"})
    a = call(client, sentiment, "Review: fine. [[answer: positive]]")
    b = call(client, french, "Good night. [[answer: Bonne nuit.]]")
    c = call(client, "Summarize the user's text in one sentence.", "Long text here. [[answer: A summary.]]")
    rows = route.wait_rows(100, "origin is null")[-3:]
    assert [(r["task"], r["routed"], r["model"]) for r in rows] == [
        ("classification", 1, "gpt-4o-mini"),  # cleared by its evidence, though the score threshold says keep
        ("translation", None, "gpt-4o"),  # its evidence says the cheaper model falls short
        ("summarization", None, "gpt-4o"),  # no evidence yet: the score threshold (1.0) decides
    ]
    assert "evidence: pass rate 85/85" in rows[0]["route_reason"] and "upper bound" in rows[1]["route_reason"]
    assert a.model == "gpt-4o-mini" and b.model == "gpt-4o" and c.model == "gpt-4o"


def test_a_cookie_set_on_one_tenants_shadow_never_rides_anothers(make_proxy, tmp_path, upstream):
    """turnout's own calls share one HTTP client: it keeps no cookie jar (a provider edge sets cookies)."""
    upstream.set_cookie = "__cf_bm=edge-cookie; Path=/; HttpOnly"
    cfg = config(tmp_path, "sample = 1.0\nexplore = 0.0\n")
    # a host name, not 127.0.0.1: cookie jars keep cookies for names (aiohttp's refuses IP addresses)
    proxy = make_proxy("--config", cfg, "--upstream", f"http://localhost:{upstream.port}", shadow=True,
                       with_upstream=False)  # fmt: skip
    for i, key in enumerate(["sk-shadow-tenant-a-01", "sk-shadow-tenant-b-02", "sk-shadow-tenant-a-01"]):
        ask(proxy.client(api_key=key), f"Classify the sentiment: fine {i}. [[answer: positive]]")
    assert len(wait_evals(proxy.db, 3)) == 3
    shadows = [r for r in upstream.requests if model_of(r) not in (None, "gpt-4o")]
    assert len(shadows) >= 3
    for r in shadows:
        assert not any(k.lower() == "cookie" for k in r["headers"]), r["headers"]
