"""Issue 3 end to end: observe and route modes through a real turnout proxy; `turnout classify`."""

from __future__ import annotations

import json
import os
import subprocess


from conftest import ROOT, turnout_cmd

SIMPLE = "What is the capital of France?"


def ask(client, content=SIMPLE, model="gpt-4o"):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}]
    )


def test_route_mode_rewrites_the_model(make_proxy, upstream):
    proxy = make_proxy("--mode", "route")
    r = ask(proxy.client())
    assert upstream.requests[-1]["body"]["model"] == "gpt-4o-mini"
    assert r.headers["x-turnout-decision"] == "route"
    assert r.headers["x-turnout-routed-from"] == "gpt-4o"
    assert r.headers["x-turnout-task"] == "qa"
    assert r.parse().model == "gpt-4o-mini"  # what the provider returned, untouched
    (row,) = proxy.wait_rows(1)
    assert (row["requested_model"], row["model"], row["response_model"]) == ("gpt-4o", "gpt-4o-mini", "gpt-4o-mini")
    assert row["routed"] == 1 and row["decision"] == "route" and row["task"] == "qa"
    assert row["baseline_cost_usd"] > row["cost_usd"] > 0
    assert json.loads(row["request_body"])["model"] == "gpt-4o"  # the client's body, as sent


def test_observe_mode_forwards_unchanged_and_records_the_saving(proxy, upstream):
    r = ask(proxy.client())
    assert upstream.requests[-1]["body"]["model"] == "gpt-4o"
    assert r.headers["x-turnout-decision"] == "observe:route"
    (row,) = proxy.wait_rows(1)
    assert row["model"] == "gpt-4o" and row["routed"] is None
    assert row["decision"] == "route" and row["would_route_to"] == "gpt-4o-mini" and 0 <= row["score"] <= 1
    assert 0 < row["projected_cost_usd"] < row["cost_usd"]
    # the same request always gets the same decision
    ask(proxy.client())
    rows = proxy.wait_rows(2)
    assert rows[1]["score"] == rows[0]["score"] and rows[1]["decision"] == rows[0]["decision"]


def test_never_routed_things_stay(make_proxy, upstream, tmp_path):
    cfg = tmp_path / "turnout.toml"
    cfg.write_text('[router]\nnever_route_tasks = ["code", "tool_use", "qa"]\n')
    proxy = make_proxy("--mode", "route", "--config", str(cfg))
    r = ask(proxy.client(), "Write a python function that reverses a linked list.\n```python\ndef f(x):\n    pass\n```")
    assert upstream.requests[-1]["body"]["model"] == "gpt-4o"
    assert r.headers["x-turnout-decision"] == "skip" and "x-turnout-routed-from" not in r.headers
    ask(proxy.client())  # qa is never routed by this config
    assert upstream.requests[-1]["body"]["model"] == "gpt-4o"
    ask(proxy.client(), model="gpt-4o-mini")  # nothing cheaper on the ladder
    rows = proxy.wait_rows(3)
    assert [r["decision"] for r in rows] == ["skip", "skip", "skip"]
    assert rows[0]["task"] == "code"


def test_mode_off_does_not_classify(make_proxy, upstream):
    proxy = make_proxy("--mode", "off")
    r = ask(proxy.client())
    assert "x-turnout-decision" not in r.headers
    (row,) = proxy.wait_rows(1)
    assert row["task"] is None and row["decision"] is None


def test_classify_round_trips_the_shared_data(tmp_path):
    data = ROOT / "router" / "data" / "routellm_train.jsonl"
    lines = data.read_text().split("\n")
    lines = [line for line in lines if line.strip()][:400]
    out = subprocess.run(
        turnout_cmd("classify"), input="\n".join(lines) + "\n", capture_output=True, text=True, check=True, timeout=120
    )
    results = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(results) == len(lines)
    assert [r["id"] for r in results] == [json.loads(line)["id"] for line in lines]
    for r in results:
        assert {"task", "score", "decision", "would_route_to"} <= set(r)
    bad = subprocess.run(
        turnout_cmd("classify"),
        input='{"model": "gpt-4o", "messages": []}\nnot json\n',
        capture_output=True,
        text=True,
        check=True,
    )
    first, second = [json.loads(x) for x in bad.stdout.splitlines()]
    assert "decision" in first and "error" in second
    claude = '{"model": "claude-sonnet-5-5", "max_tokens": 64, "system": "Be brief.", "messages": [{"role": "user", "content": "What is the capital of France?"}]}\n'
    cfg = tmp_path / "route-all.toml"
    cfg.write_text("[router]\nthreshold = 0.0\n")  # every eligible request routes: the ladder decides
    by_provider = {
        p: json.loads(
            subprocess.run(
                turnout_cmd("classify", "--provider", p, "--config", str(cfg)),
                input=claude,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for p in ("openai", "anthropic")
    }
    assert by_provider["openai"]["decision"] == "skip"  # no Claude model on OpenAI's ladders
    assert (by_provider["anthropic"]["decision"], by_provider["anthropic"]["would_route_to"]) == (
        "route",
        "claude-haiku-5-5",
    )
    assert by_provider["anthropic"]["task"] == "qa"


def test_savings_report(proxy):
    for q in (SIMPLE, "Translate 'good morning' into French."):
        ask(proxy.client(), q)
    proxy.wait_rows(2)
    proxy.stop()
    out = subprocess.run(
        turnout_cmd("savings", "--db", str(proxy.db), "--format", "json"), capture_output=True, text=True, check=True
    )
    data = json.loads(out.stdout)
    assert data["totals"]["calls"] == 2
    assert data["totals"]["saving_usd"] > 0
    assert {g["would_route_to"] for g in data["groups"]} == {"gpt-4o-mini"}
    table = subprocess.run(
        turnout_cmd("savings", "--db", str(proxy.db)),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert "gpt-4o → gpt-4o-mini" in table.stdout and "total" in table.stdout


def test_train_then_classify_with_the_new_model(tmp_path):
    data = ROOT / "router" / "data" / "routellm_train.jsonl"
    lines = [line for line in data.read_text().split("\n") if line.strip()]
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(lines[:300] + lines[-150:]) + "\n")
    model = tmp_path / "model.json"
    out = subprocess.run(
        turnout_cmd("train", "--data", str(small), "--out", str(model)),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert out.returncode == 0, out.stderr
    assert "APGR" in out.stdout and "overall" in out.stdout
    artifact = json.loads(model.read_text())  # plain JSON, loadable without executing anything
    assert artifact["version"]
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[router]\nmodel_path = "{model}"\nthreshold = 0.5\n')
    res = subprocess.run(
        turnout_cmd("classify", "--config", str(cfg)), input=lines[0] + "\n", capture_output=True, text=True, check=True
    )
    assert json.loads(res.stdout)["score"] is not None
