"""A deployment's own router from its shadow verdicts: a ledger built end to end through a real proxy
(the test server's cheaper model fails exactly the questions about warranties), then
`turnout train --from-ledger`; the new model orders fresh requests from the same rule far better than
the shipped one, and loads with `[router] model_path`."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess

import pytest

from conftest import turnout_cmd
from test_shadow import KEY, config, wait_evals

from turnout.router.difficulty import load_model
from turnout.router.ledger_train import score_apgr
from turnout.router.train import TrainRow

PRODUCTS = ["blender", "laptop", "headphones", "coffee machine", "vacuum", "phone case", "monitor", "router",
            "kettle", "desk lamp", "e-bike", "camera", "printer", "keyboard", "smartwatch"]  # fmt: skip
ASKS = ["Can I return my {p} after 40 days?", "How do I reset my {p}?", "Is the {p} covered by warranty if it falls?",
        "Does the warranty on the {p} include water damage?", "Where is my {p} order?", "What colour options does the {p} have?",
        "Who pays shipping when a {p} under warranty is repaired?", "Can I change the delivery address for my {p}?",
        "How long is the warranty for a refurbished {p}?", "Is there a student discount on the {p}?"]  # fmt: skip
SYSTEM = "You are the support assistant of an online store. Answer in one short sentence."


def request(rng: random.Random, i: int) -> tuple[dict, bool]:
    ask = rng.choice(ASKS).format(p=rng.choice(PRODUCTS))
    hard = "warranty" in ask  # the rule: the cheaper model gets warranty questions wrong
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"#{i} {ask}"}],
    }
    return body, hard


# hundreds of calls with their shadows, a training run and a second proxy: minutes on a slow machine
@pytest.mark.timeout(600)
def test_train_from_ledger_learns_the_teams_own_rule(make_proxy, tmp_path):
    db = tmp_path / "ledger.db"
    # a judge too: whether an answer is compared as a label or judged depends on the task it is given
    proxy = make_proxy("--config", config(tmp_path, 'sample = 1.0\njudge_model = "gpt-4o"\n'), db=db, shadow=True)
    client = proxy.client(api_key=KEY, default_headers={"x-turnout-cache": "no"})
    rng = random.Random(1)
    n = 260
    for i in range(n):
        body, hard = request(rng, i)
        directive = "[[answer: yes]]" + (" [[cheap-answer: no #worse]]" if hard else "")
        body["messages"][1]["content"] += f" {directive}"
        client.chat.completions.create(**body)
    assert len(wait_evals(db, n, timeout=60)) == n
    proxy.stop()

    out = tmp_path / "own.json"
    run = subprocess.run(turnout_cmd("train", "--from-ledger", str(db), "--out", str(out), "--format", "json"),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    print("from-ledger report:", report)
    assert report["n_rows"] == n  # every verdict decided
    assert report["written"] and report["n_test"] >= 40 and report["test_apgr_new"] > report["test_apgr_shipped"]

    fresh_rng = random.Random(99)  # fresh requests from the same rule, never in the ledger
    fresh = []
    for i in range(300):
        body, hard = request(fresh_rng, 10_000 + i)
        fresh.append(TrainRow(f"f{i}", "fresh", body, 1.0, 0.0 if hard else 1.0))
    own, shipped = score_apgr(load_model(str(out)), fresh), score_apgr(load_model(None), fresh)
    print(f"fresh APGR: own {own:.3f}, shipped {shipped:.3f}")
    assert own >= 0.75 and own >= shipped + 0.2, (own, shipped)

    # what the new model would have decided on the observed traffic, next to what the router decided
    what = subprocess.run(turnout_cmd("savings", "--db", str(db), "--model", str(out), "--format", "json"),
                          capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    w = json.loads(what.stdout)["what_if"]["totals"]
    assert w["calls"] == n and w["route_before"] == n  # the ledger was built routing everything (threshold 0)
    assert 0 < w["route_now"] < n and w["changed"] == n - w["route_now"]  # the new model keeps the warranty ones

    cfg = tmp_path / "router.toml"
    cfg.write_text(f'[router]\nmodel_path = "{out}"\n')
    lines = [json.dumps(request(random.Random(s), 0)[0]) for s in (3, 4)]
    scored = subprocess.run(turnout_cmd("classify", "--config", str(cfg)), input="\n".join(lines) + "\n",
                            capture_output=True, text=True, check=True, timeout=120).stdout  # fmt: skip
    assert len(scored.strip().splitlines()) == 2


# The test server's directives sit in the system prompts, so the user text says nothing of the outcome.
LABELS = "You triage support questions for an online store. Reply with yes or no only. [[answer: yes]]"
ESSAY = "You write thorough support answers for an online store. [[answer: yes]] [[cheap-answer: no #worse]]"


def templated(rng: random.Random, i: int) -> tuple[dict, bool]:
    """A question under one of two system prompts: the cheaper model fails every essay, whatever the question."""
    ask = rng.choice([a for a in ASKS if "warranty" not in a]).format(p=rng.choice(PRODUCTS))
    essay = rng.random() < 0.5
    system = ESSAY if essay else LABELS
    body = {"model": "gpt-4o", "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"#{i} {ask}"}]}  # fmt: skip
    return body, essay


@pytest.mark.timeout(600)
def test_train_from_ledger_calibrates_each_template_and_the_router_follows(make_proxy, tmp_path):
    """The user text cannot tell the two templates apart, so only the per-template calibration can: the new
    model's pass rate for the essay template is low and the labels one high, and a proxy loading it routes
    exactly the labels calls at target_quality 0.9."""
    db = tmp_path / "ledger.db"
    proxy = make_proxy("--config", config(tmp_path, 'sample = 1.0\njudge_model = "gpt-4o"\n'), db=db, shadow=True)
    client = proxy.client(api_key=KEY, default_headers={"x-turnout-cache": "no"})
    rng = random.Random(5)
    n = 240
    for i in range(n):
        client.chat.completions.create(**templated(rng, i)[0])
    assert len(wait_evals(db, n, timeout=60)) == n
    proxy.stop()

    out = tmp_path / "own.json"
    run = subprocess.run(turnout_cmd("train", "--from-ledger", str(db), "--out", str(out)),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pass rate" in run.stdout  # the per-task table: measured next to each model's pass probability
    model = load_model(str(out))
    assert model.pass_calibration is not None
    templates = [k for k in model.pass_calibration.groups if k.startswith("template:")]
    assert len(templates) == 2, model.pass_calibration.groups

    cfg = tmp_path / "own.toml"
    cfg.write_text(f'[router]\nmodel_path = "{out}"\ntarget_quality = 0.9\nnever_route_tasks = []\n')
    observe = make_proxy("--config", str(cfg), db=tmp_path / "fresh.db")
    client = observe.client(api_key=KEY, default_headers={"x-turnout-cache": "no"})
    fresh_rng, sent = random.Random(77), {}
    for i in range(40):
        body, essay = templated(fresh_rng, 50_000 + i)
        client.chat.completions.create(**body)
        sent[f"#{50_000 + i} "] = essay
    observe.stop()
    conn = sqlite3.connect(tmp_path / "fresh.db")
    rows = conn.execute("select request_body, decision, route_reason from flows").fetchall()
    conn.close()
    assert len(rows) == 40
    for body_text, decision, reason in rows:
        user = json.loads(body_text)["messages"][1]["content"]
        essay = next(v for k, v in sent.items() if user.startswith(k))
        assert decision == ("keep" if essay else "route"), (user, decision, reason)
        assert "template:" in reason  # the decision names the evidence it rests on
