"""RoutingPolicy: ladders, snapshots, never-route rules, thresholds, config errors."""

from __future__ import annotations

import pytest

from turnout.router.ladders import base_model, next_rung, parse_ladders
from turnout.router.policy import RoutingDecision, RoutingPolicy, threshold_for_quality

QUESTION = "Which of these is a prime number?\nA. 21\nB. 27\nC. 29\nD. 33\nAnswer:"


def body(model="gpt-4o", content=QUESTION, **extra):
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="module")
def always():
    """Threshold 0: every eligible request routes, isolating the eligibility rules."""
    return RoutingPolicy.from_config({"threshold": 0.0})


@pytest.fixture(scope="module")
def never():
    return RoutingPolicy.from_config({"threshold": 1.0})


def test_default_config_and_decision_shape():
    p = RoutingPolicy.from_config(None)
    assert p.target_quality == 0.95 and 0.0 < p.threshold <= 1.0
    d = p.decide(body())
    assert isinstance(d, RoutingDecision) and d.task == "qa" and d.score is not None
    assert d.decision in ("route", "keep")
    assert (d.would_route_to == "gpt-4o-mini") == (d.decision == "route")


@pytest.mark.parametrize(
    "model,cheaper",
    [
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o-mini"),
        ("gpt-4.1", "gpt-4.1-mini"),
        ("gpt-4.1-mini", "gpt-4.1-nano"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-nano"),
        ("o3", "o4-mini"),
        ("o3-2025-04-16", "o4-mini"),
        ("gpt-5", "gpt-5-mini"),
        ("gpt-5-mini", "gpt-5-nano"),
    ],
)
def test_ladder_and_snapshots(always, model, cheaper):
    d = always.decide(body(model))
    assert (d.decision, d.would_route_to) == ("route", cheaper)
    assert d.reason.startswith("score ")


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4.1-nano", "gpt-5-nano", "o4-mini", "claude-3-opus", "my-finetune"])
def test_no_cheaper_model_skips(always, model):
    d = always.decide(body(model))
    assert d.decision == "skip" and d.score is None and "no cheaper model" in d.reason


def test_keep_below_threshold(never):
    d = never.decide(body())
    assert d.decision == "keep" and d.would_route_to is None and "<" in d.reason


def test_base_model_names():
    assert base_model("gpt-4o-2024-08-06") == "gpt-4o"
    assert base_model("gpt-4-0613") == "gpt-4"
    assert base_model("GPT-4o") == "gpt-4o"
    assert base_model("gpt-4o-mini") == "gpt-4o-mini"
    assert next_rung(parse_ladders(None), "azure", "gpt-4o") is None


def test_never_route_by_task_default_and_config(always):
    code = body(content="Write a Python function that parses ISO dates.")
    d = always.decide(code)
    assert d.decision == "skip" and d.task == "code" and d.reason == "task code is never routed"
    p = RoutingPolicy.from_config({"threshold": 0.0, "never_route_tasks": ["qa"]})
    assert p.decide(code).decision == "route"
    assert p.decide(body()).reason == "task qa is never routed"


def test_never_route_by_feature_and_api_key():
    p = RoutingPolicy.from_config({"threshold": 0.0, "never_route_features": ["billing"], "never_route_api_keys": ["fp-1"]})
    assert p.decide(body(), feature="billing").reason == "feature billing is never routed"
    assert p.decide(body(), feature="search").decision == "route"
    assert p.decide(body(), api_key_fp="fp-1").reason == "API key is never routed"
    assert p.decide(body(), api_key_fp="fp-2").decision == "route"


@pytest.mark.parametrize(
    "model,extra,needle",
    [
        ("gpt-4o", {"modalities": ["text", "audio"], "audio": {"voice": "alloy"}}, "uses audio"),
        ("gpt-4o", {"reasoning_effort": "high"}, "uses reasoning_effort"),
        ("gpt-4o", {"web_search_options": {}}, "uses web search"),
        ("o3", {"prediction": {"type": "content", "content": "x"}}, "uses predicted outputs"),
        ("o3", {"logprobs": True}, "uses logprobs"),
        ("gpt-4o", {"previous_response_id": "resp_1"}, "stored response"),
    ],
)
def test_never_route_missing_capability(always, model, extra, needle):
    d = always.decide(body(model, **extra))
    assert d.decision == "skip" and needle in d.reason and d.score is None


def test_capabilities_the_cheaper_model_has_are_fine(always):
    img = body(content=[{"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": "x"}}])
    assert always.decide(img).decision == "route"
    assert always.decide(body("o3", reasoning_effort="high")).decision == "route"
    assert always.decide(body(response_format={"type": "json_schema", "json_schema": {}})).decision == "route"
    p = RoutingPolicy.from_config({"threshold": 0.0, "capabilities": {"gpt-4o-mini": []}})
    assert "uses images" in p.decide(img).reason


def test_custom_ladders_replace_provider_defaults():
    p = RoutingPolicy.from_config({"threshold": 0.0, "ladders": {"openai": [["gpt-4o", "gpt-4.1-nano"]], "azure": [["big", "small"]]}})
    assert p.decide(body()).would_route_to == "gpt-4.1-nano"
    assert p.decide(body("gpt-4.1")).decision == "skip"
    assert p.decide(body("big"), provider="azure").would_route_to == "small"
    # a model missing from the capability table is assumed to support nothing optional
    d = p.decide(body("big", response_format={"type": "json_object"}), provider="azure")
    assert d.decision == "skip" and "small lacks" in d.reason


def test_skip_on_bad_bodies():
    p = RoutingPolicy.from_config(None)
    for b in (None, [], "x", 3, {}, {"messages": []}, {"model": 5, "messages": "hi"}):
        d = p.decide(b)
        assert d.decision == "skip" and d.score is None
    assert p.decide({"messages": [{"role": "user", "content": "hi"}]}).reason == "no model in request"
    assert RoutingPolicy.from_config({"enabled": False}).decide(body()).reason == "router disabled"


def test_deterministic():
    p = RoutingPolicy.from_config(None)
    b = body(content="Explain the difference between TCP and UDP for a beginner.")
    assert len({p.decide(b) for _ in range(20)}) == 1
    assert RoutingPolicy.from_config(None).decide(b) == p.decide(b)


def test_target_quality_resolution():
    table = [
        {"threshold": 1.0, "route_fraction": 0.0, "quality_ratio": 1.0, "pgr": 1.0},
        {"threshold": 0.8, "route_fraction": 0.2, "quality_ratio": 0.99, "pgr": 0.9},
        {"threshold": 0.6, "route_fraction": 0.5, "quality_ratio": 0.95, "pgr": 0.7},
        {"threshold": 0.5, "route_fraction": 0.6, "quality_ratio": 0.93, "pgr": 0.6},
        {"threshold": 0.4, "route_fraction": 0.7, "quality_ratio": 0.96, "pgr": 0.6},  # noise: not reached
        {"threshold": 0.0, "route_fraction": 1.0, "quality_ratio": 0.85, "pgr": 0.0},
    ]
    assert threshold_for_quality(table, 0.95) == 0.6
    assert threshold_for_quality(table, 0.99) == 0.8
    assert threshold_for_quality(table, 0.5) == 0.0
    # stricter targets give higher thresholds with the shipped calibration
    ts = [RoutingPolicy.from_config({"target_quality": q}).threshold for q in (0.85, 0.9, 0.95, 0.99)]
    assert ts == sorted(ts)
    strict = RoutingPolicy.from_config({"target_quality": 0.9})
    assert strict.target_quality == 0.9


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"target_quality": 0}, "target_quality"),
        ({"threshold": 0.5, "target_quality": 0.9}, "not both"),
        ({"never_route_tasks": ["coding"]}, "unknown task"),
        ({"never_route_tasks": "code"}, "list of strings"),
        ({"ladders": {"openai": [["gpt-4o"]]}}, "at least two"),
        ({"ladders": {"openai": "gpt-4o>gpt-4o-mini"}}, "list of model lists"),
        ({"ladders": {"openai": [["a", "b"], ["a", "c"]]}}, "two ladders"),
        ({"capabilities": {"gpt-4o-mini": ["telepathy"]}}, "unknown capability"),
        ({"treshold": 0.5}, "unknown \\[router\\] key"),
        ({"enabled": "yes"}, "enabled"),
        ({"model_path": "/nonexistent/model.json"}, "cannot load"),
        ({"default_model": ""}, "default_model"),
    ],
)
def test_bad_config_raises_value_error(cfg, match):
    with pytest.raises(ValueError, match=match):
        RoutingPolicy.from_config(cfg)
