"""RoutingPolicy: ladders, snapshots, never-route rules, thresholds, config errors."""

from __future__ import annotations

import pytest

from turnout.router.ladders import base_model, parse_ladders, rung_index
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


@pytest.mark.parametrize(
    "model", ["gpt-4o-mini", "gpt-4.1-nano", "gpt-5-nano", "o4-mini", "claude-3-opus", "my-finetune"]
)
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
    assert rung_index(parse_ladders(None)).get("azure", {}).get(base_model("gpt-4o")) is None


def test_never_route_by_task_default_and_config(always):
    code = body(content="Write a Python function that parses ISO dates.")
    d = always.decide(code)
    assert d.decision == "skip" and d.task == "code" and d.reason == "task code is never routed"
    p = RoutingPolicy.from_config({"threshold": 0.0, "never_route_tasks": ["qa"]})
    assert p.decide(code).decision == "route"
    assert p.decide(body()).reason == "task qa is never routed"


def test_never_route_by_feature_and_api_key():
    p = RoutingPolicy.from_config(
        {"threshold": 0.0, "never_route_features": ["billing"], "never_route_api_keys": ["fp-1"]}
    )
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
    img = body(
        content=[{"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": "x"}}]
    )
    assert always.decide(img).decision == "route"
    assert always.decide(body("o3", reasoning_effort="high")).decision == "route"
    assert always.decide(body(response_format={"type": "json_schema", "json_schema": {}})).decision == "route"
    p = RoutingPolicy.from_config({"threshold": 0.0, "capabilities": {"gpt-4o-mini": []}})
    assert "uses images" in p.decide(img).reason


def test_custom_ladders_replace_provider_defaults():
    p = RoutingPolicy.from_config(
        {"threshold": 0.0, "ladders": {"openai": [["gpt-4o", "gpt-4.1-nano"]], "azure": [["big", "small"]]}}
    )
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


# -- Anthropic Messages API -----------------------------------------------------------------------


def claude(model="claude-sonnet-5-5", content=QUESTION, **extra):
    return {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize(
    "model,cheaper",
    [
        ("claude-opus-5-5", "claude-sonnet-5-5"),
        ("claude-sonnet-5-5", "claude-haiku-5-5"),
        ("claude-opus-5", "claude-sonnet-5"),
        ("claude-opus-4-6", "claude-sonnet-4-6"),
        ("claude-sonnet-4-5", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-haiku-4-5"),
    ],
)
def test_anthropic_ladders_and_dated_snapshots(always, model, cheaper):
    d = always.decide(claude(model), provider="anthropic")
    assert (d.decision, d.would_route_to) == ("route", cheaper)
    assert always.decide(claude(model), provider="openai").decision == "skip"  # ladders are per provider


@pytest.mark.parametrize(
    "model", ["claude-haiku-4-5", "claude-haiku-5-5", "claude-3-opus-20240229", "claude-sonnet-4-6", "claude-opus-4-5"]
)
def test_anthropic_bottom_rungs_and_unknown_models_skip(always, model):
    assert always.decide(claude(model), provider="anthropic").decision == "skip"


def test_anthropic_system_prompt_and_content_blocks_are_read():
    from turnout.router.features import extract_features

    f = extract_features(claude(
        system=[{"type": "text", "text": "You are a terse assistant."}],
        content=[{"type": "text", "text": "What is in this document?"},
                 {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "x"}},
                 {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}],
    ))  # fmt: skip
    assert f.has_system and f.system_chars == len("You are a terse assistant.")
    assert f.user_text == "what is in this document?" and {"files", "images"} <= f.uses
    tools = extract_features(
        claude(tools=[{"name": "get_weather", "input_schema": {"type": "object"}}], tool_choice={"type": "any"})
    )
    assert tools.has_tools and tools.tool_choice == "required" and "tools" in tools.uses
    history = extract_features({"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18 C, cloudy"}]},
    ]})  # fmt: skip
    assert history.has_tool_results


def test_anthropic_capability_rules():
    p = RoutingPolicy.from_config({"threshold": 0.0, "never_route_tasks": []})  # only the capability rules decide

    def decide(b: dict) -> RoutingDecision:
        return p.decide(b, provider="anthropic")

    # client tools, images, documents and extended thinking: the cheaper rung has them
    ok = claude(tools=[{"name": "lookup", "input_schema": {"type": "object"}}], thinking={"type": "enabled", "budget_tokens": 2048},
                content=[{"type": "text", "text": QUESTION}, {"type": "image", "source": {"type": "url", "url": "u"}}])  # fmt: skip
    assert (decide(ok).decision, decide(ok).would_route_to) == ("route", "claude-haiku-5-5")
    assert decide(claude(thinking={"type": "disabled"})).decision == "route"
    no_thinking = RoutingPolicy.from_config({"threshold": 0.0, "capabilities": {"claude-haiku-5-5": ["images"]}})
    d = no_thinking.decide(claude(thinking={"type": "enabled", "budget_tokens": 2048}), provider="anthropic")
    assert d.decision == "skip" and "extended thinking" in d.reason
    # server-side tools, MCP servers and signed thinking blocks from an earlier turn are never routed
    web = decide(claude(tools=[{"type": "web_search_20250305", "name": "web_search"}]))
    assert web.decision == "skip" and "web search" in web.reason
    code = decide(claude(tools=[{"type": "code_execution_20250522", "name": "code_execution"}]))
    assert code.decision == "skip" and "built-in tools" in code.reason
    mcp = decide(claude(mcp_servers=[{"type": "url", "url": "https://mcp", "name": "m"}]))
    assert mcp.decision == "skip" and "built-in tools" in mcp.reason
    signed = {"model": "claude-sonnet-5-5", "messages": [
        {"role": "user", "content": "Think: is 91 prime?"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "91 = 7*13", "signature": "sig"}, {"type": "text", "text": "No."}]},
        {"role": "user", "content": "And 97?"},
    ]}  # fmt: skip
    d = decide(signed)
    assert d.decision == "skip" and "reasoning items" in d.reason


def test_a_body_the_extractor_cannot_read_is_never_routed(monkeypatch):
    """Fault injection: should feature extraction ever fail, the request must not skip the capability checks."""
    import turnout.router.features as features

    odd = body(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice={"type": ["auto"]},
               content=[{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": QUESTION}])  # fmt: skip
    p = RoutingPolicy.from_config({"threshold": 0.0, "never_route_tasks": []})
    assert p.decide(odd).decision == "route"  # read fine: images and tools are things gpt-4o-mini has

    def broken(*a, **kw):
        raise TypeError("a bug in the extractor")

    monkeypatch.setattr(features, "_tools_info", broken)
    d = p.decide(odd)
    assert d.decision == "skip" and "could not be analysed" in d.reason


def test_provider_betas_are_routed_only_when_allowed():
    p = RoutingPolicy.from_config({"threshold": 0.0, "allowed_betas": ["fine-grained-tool-streaming-2025-05-14"]})
    d = p.decide(claude(), provider="anthropic", betas=["context-1m-2025-08-07"])
    assert d.decision == "skip" and "provider beta context-1m-2025-08-07" in d.reason
    assert (
        p.decide(claude(), provider="anthropic", betas=["fine-grained-tool-streaming-2025-05-14"]).decision == "route"
    )
    mixed = ["fine-grained-tool-streaming-2025-05-14", "context-1m-2025-08-07"]
    assert p.decide(claude(), provider="anthropic", betas=mixed).decision == "skip"
    from turnout.addons.route import request_betas

    assert request_betas({"anthropic-beta": "a-1, b-2,", "openai-beta": "assistants=v2"}) == [
        "a-1",
        "b-2",
        "assistants=v2",
    ]


def test_a_configured_ladder_can_pin_a_dated_target():
    p = RoutingPolicy.from_config(
        {"threshold": 0.0, "ladders": {"anthropic": [["Claude-Sonnet-5-5", "claude-haiku-4-5-20251001"]]}}
    )
    d = p.decide(claude("claude-sonnet-5-5-20260301"), provider="anthropic")
    assert (d.decision, d.would_route_to) == ("route", "claude-haiku-4-5-20251001")  # sent as written, lower-cased
    with pytest.raises(ValueError, match="different next rungs"):
        parse_ladders({"openai": [["gpt-4o", "gpt-4o-mini"], ["gpt-4o-2024-08-06", "gpt-4.1-nano"]]})
    parse_ladders({"openai": [["gpt-4o", "GPT-4o-mini"], ["GPT-4O", "gpt-4o-mini"]]})  # the same rung, spelled twice


def test_a_request_asking_for_more_output_than_the_cheaper_rung_gives_stays():
    p = RoutingPolicy.from_config({"threshold": 0.0, "max_output": {"claude-haiku-5-5": 8192}})
    assert p.decide(body(max_tokens=16_384)).decision == "route"  # gpt-4o-mini gives 16,384
    d = p.decide(body(max_completion_tokens=20_000))
    assert d.decision == "skip" and "gpt-4o-mini gives at most 16384" in d.reason
    assert p.decide(claude(max_tokens=8192), provider="anthropic").decision == "route"
    d = p.decide(claude(max_tokens=32_000), provider="anthropic")
    assert d.decision == "skip" and "claude-haiku-5-5 gives at most 8192" in d.reason
    with pytest.raises(ValueError, match="positive number of tokens"):
        RoutingPolicy.from_config({"max_output": {"gpt-4o-mini": "lots"}})


def test_a_calibrated_model_holds_each_groups_pass_rate_to_the_target(tmp_path):
    """With a from-ledger calibration, the request's template decides; an explicit threshold still wins."""
    import dataclasses

    from turnout.router.calibration import PassCalibration
    from turnout.router.difficulty import load_model

    calibration = PassCalibration(0.0, 1.0, {"template:good": (4.0, 0.0, 30), "template:bad": (-4.0, 0.0, 30)}, 60)
    path = tmp_path / "own.json"
    dataclasses.replace(load_model(None), pass_calibration=calibration).save(path)
    p = RoutingPolicy.from_config({"model_path": str(path), "target_quality": 0.9})
    good, bad = p.decide(body(), template="good"), p.decide(body(), template="bad")
    assert good.decision == "route" and "template:good (30)" in good.reason and ">= 0.90" in good.reason
    assert bad.decision == "keep" and bad.candidate == "gpt-4o-mini" and "< 0.90" in bad.reason
    assert "[all groups]" in p.decide(body()).reason  # no template with evidence: the global mapping
    fixed = RoutingPolicy.from_config({"model_path": str(path), "threshold": 0.0})
    assert fixed.decide(body(), template="bad").decision == "route"
