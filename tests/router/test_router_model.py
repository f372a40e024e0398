"""Artifact, APGR metric, classify round-trip, train smoke test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from turnout.router import train as train_mod
from turnout.router.apgr import apgr, pgr_curve
from turnout.router.classify import classify_records
from turnout.router.difficulty import DEFAULT_ARTIFACT, DifficultyModel, load_model
from turnout.router.features import extract_features
from turnout.router.policy import RoutingPolicy

DATA = Path(train_mod.__file__).resolve().parent / "data" / "routellm_train.jsonl"


def data_lines() -> list[str]:
    # not str.splitlines(): prompts contain U+2028/U+2029, which it would split on
    with open(DATA, encoding="utf-8") as fh:
        return list(fh)


def test_apgr_hand_computed():
    # Two requests; only the first needs the strong model. q_weak = 0.5, q_strong = 1.
    # Strong share k = floor(c*2 + 0.5): 0 for c < 0.25, then >= 1.
    # Right order: PGR = 0 at c = 0..0.24, 1 from c = 0.25 -> area 0.005 + 0.75 = 0.755.
    assert apgr([0.1, 0.9], [1, 1], [0, 1]) == pytest.approx(0.755)
    # Wrong order: PGR reaches 1 only at k = 2 (c >= 0.75) -> 0.005 + 0.25.
    assert apgr([0.9, 0.1], [1, 1], [0, 1]) == pytest.approx(0.255)
    curve = pgr_curve([0.1, 0.9], [1, 1], [0, 1])
    assert curve.q_strong == 1.0 and curve.q_weak == 0.5 and len(curve.pgr) == 101
    with pytest.raises(ValueError):
        apgr([], [], [])


def test_apgr_random_is_about_half():
    import random

    rng = random.Random(0)
    n = 4000
    strong = [rng.random() < 0.8 for _ in range(n)]
    weak = [rng.random() < 0.6 for _ in range(n)]
    assert apgr([rng.random() for _ in range(n)], strong, weak) == pytest.approx(0.5, abs=0.05)


def test_artifact_is_json_small_and_loads():
    raw = DEFAULT_ARTIFACT.read_bytes()
    assert not raw.startswith(b"\x80"), "pickle"
    data = json.loads(raw)
    assert data["format"] == "turnout-difficulty" and data["version"] == "difficulty-v1"
    assert len(raw) < 400_000
    rep = data["report"]
    assert {"gsm8k", "mmlu", "overall"} <= set(rep["apgr_val"])
    assert rep["apgr_val"]["overall"] > 0.6
    assert len(data["calibration"]) == 101
    m = load_model()
    assert isinstance(m, DifficultyModel) and m.version == "difficulty-v1"
    s = m.score(extract_features({"messages": [{"role": "user", "content": "What is 2+2?"}]}))
    assert 0.0 < s < 1.0
    with pytest.raises(ValueError):
        DifficultyModel.from_json({"format": "pickle"})


def test_shipped_validation_apgr_reproduces():
    rep = load_model().report["apgr_val"]
    got = train_mod.validation_apgr(load_model(), [DATA])
    assert got == pytest.approx(rep, abs=1e-3)


def test_classify_round_trips_data_file():
    policy = RoutingPolicy.from_config(None)
    lines = data_lines()
    ids = [json.loads(line)["id"] for line in lines]
    out = list(classify_records(lines, policy))
    assert len(out) == len(lines) == 7725
    assert [o["id"] for o in out] == ids
    for o in out[:50]:
        assert {"task", "score", "decision", "would_route_to", "reason", "model"} <= set(o)
        assert o["model"] == "gpt-4o"
        assert o["decision"] in ("route", "keep") or o["reason"] == f"task {o['task']} is never routed"


def test_classify_bad_lines_and_bodies():
    policy = RoutingPolicy.from_config(None)
    lines = [
        '{"model": "gpt-4.1", "messages": [{"role": "user", "content": "Summarize: cats sleep a lot."}]}',
        "not json",
        "[1, 2]",
        '{"id": 7, "prompt": "hello"}',
    ]
    out = list(classify_records(lines, policy))
    assert len(out) == 4
    assert out[0]["task"] == "summarization" and out[0]["model"] == "gpt-4.1"
    assert "error" in out[1] and "line 2" in out[1]["error"]
    assert "error" in out[2]
    assert out[3]["id"] == 7 and out[3]["model"] == "gpt-4o"


def test_train_smoke(tmp_path):
    lines = data_lines()
    small = tmp_path / "small.jsonl"
    small.write_text("".join(lines[::40]), encoding="utf-8")  # ~190 rows, both sources
    out = tmp_path / "m.json"
    report = train_mod.train([small], out)
    assert out.exists() and report.n_train + report.n_val == len(lines[::40])
    assert {"overall", "mmlu", "gsm8k"} <= set(report.apgr_val)
    m = DifficultyModel.load(out)
    assert RoutingPolicy.from_config({"model_path": str(out), "target_quality": 0.9}).model.version == m.version
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n', encoding="utf-8")
    with pytest.raises(ValueError):
        train_mod.train([bad], tmp_path / "x.json")


def test_split_is_deterministic_and_stratified():
    rows = train_mod.read_rows([DATA])
    a = train_mod.split_rows(rows)
    assert a == train_mod.split_rows(list(rows))
    tr, va = a
    assert not set(tr) & set(va) and len(tr) + len(va) == len(rows)
    gsm_val = sum(1 for i in va if rows[i].source == "gsm8k")
    assert abs(gsm_val - 641 / 5) <= 2
