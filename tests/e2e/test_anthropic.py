"""The provider interface's second implementation: Anthropic's Messages API through a real proxy."""

from __future__ import annotations

import json

import anthropic
import pytest

HOSTS = ("--set", "turnout_hosts=api.openai.com", "--set", "turnout_hosts=api.anthropic.com")
MODEL = "claude-3-5-haiku-latest"


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(*HOSTS)


def test_messages_are_recorded_and_priced(proxy, upstream):
    client = proxy.anthropic_client(api_key="sk-ant-api03-SECRETSECRET-wxyz", max_retries=0)
    msg = client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello from claude land"}],
        extra_headers={"x-test-cache-read": "3"},
    )
    assert msg.content[0].text == "echo from claude-3-5-haiku-latest: hello from claude land"
    (row,) = proxy.wait_rows(1)
    assert (row["provider"], row["endpoint"], row["host"]) == ("anthropic", "messages", "api.anthropic.com")
    assert row["requested_model"] == row["response_model"] == MODEL and row["finish_reason"] == "end_turn"
    # input_tokens (4) excludes the 3 cache reads, which are billed at the cache-read rate
    assert (row["prompt_tokens"], row["cached_prompt_tokens"], row["completion_tokens"]) == (7, 3, 7)
    assert row["cost_usd"] == pytest.approx((4 * 0.8 + 3 * 0.08 + 7 * 4.0) / 1e6)
    assert row["api_key_fp"].endswith("-wxyz") and b"SECRETSECRET" not in proxy.db.read_bytes()
    sent = {k.lower(): v for k, v in upstream.requests[-1]["headers"].items()}
    assert "sk-ant-api03-SECRETSECRET-wxyz" in (
        sent.get("x-api-key"),
        sent.get("authorization", "").removeprefix("Bearer "),
    )


def test_streams_tool_use_and_cache_hits(proxy, upstream):
    client = proxy.anthropic_client(max_retries=0)
    with client.messages.stream(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "stream me"}]) as s:
        live = s.get_final_message()
    assert live.content[0].text.strip() == "echo from claude-3-5-haiku-latest: stream me"
    # the same call again is a hit: the stream is rebuilt from the recording and parses the same
    with client.messages.stream(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "stream me"}]) as s:
        again = s.get_final_message()
    assert again.content[0].text == live.content[0].text and again.usage.output_tokens == live.usage.output_tokens
    plain = client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "stream me"}])
    assert plain.content[0].text == live.content[0].text
    tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}]
    with client.messages.stream(
        model=MODEL, max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather?"}]
    ) as s:
        tool_msg = s.get_final_message()
    assert tool_msg.content[0].name == "get_weather" and tool_msg.content[0].input == {"city": "Paris"}
    rows = proxy.wait_rows(4)
    assert [r["cache"] for r in rows] == ["miss", "hit", "hit", "miss"]
    assert rows[0]["stream"] == 1 and rows[0]["completion_tokens"] == 5 and rows[0]["error"] is None
    assert json.loads(rows[3]["response_body"])["content"][0]["input"] == {"city": "Paris"}
    assert (
        sum(1 for r in upstream.requests if r["path"] == "/v1/messages" and "stream me" in json.dumps(r["body"])) == 1
    )


def test_errors_keep_their_anthropic_shape(proxy):
    client = proxy.anthropic_client(max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model="error-429", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    (row,) = proxy.wait_rows(1)
    assert row["status_code"] == 429 and "rate_limit_error" in row["error"]


def test_budget_block_reaches_the_anthropic_sdk_as_its_own_error(make_proxy, tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[budgets]]\nname = "claude"\nscope = "model"\nwindow = "day"\nrequests = 1\n')
    proxy = make_proxy(*HOSTS, "--config", str(cfg), "--set", "turnout_cache=false")
    client = proxy.anthropic_client(max_retries=0)
    client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "one"}])
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "two"}])
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["code"] == "budget_exceeded"


def test_messages_are_routed_down_the_anthropic_ladder(make_proxy, upstream):
    """Route mode: a simple question for Sonnet goes to Haiku; the ledger keeps what it would have cost."""
    proxy = make_proxy(*HOSTS, "--mode", "route", "--set", "turnout_cache=false")
    client = proxy.anthropic_client(max_retries=0)
    ask = {"max_tokens": 100, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    raw = client.messages.with_raw_response.create(model="claude-sonnet-5-5", system="Be brief.", **ask)
    assert upstream.requests[-1]["body"]["model"] == "claude-haiku-5-5"
    assert raw.headers["x-turnout-decision"] == "route" and raw.headers["x-turnout-routed-from"] == "claude-sonnet-5-5"
    assert raw.parse().model == "claude-haiku-5-5"
    # web search runs at the provider: never routed (the cheaper rung is not known to have it)
    client.messages.create(
        model="claude-sonnet-5-5", tools=[{"type": "web_search_20250305", "name": "web_search"}], **ask
    )
    assert upstream.requests[-1]["body"]["model"] == "claude-sonnet-5-5"
    # a beta is switched on for the model asked for (e.g. a longer context): never routed either
    client.messages.create(model="claude-sonnet-5-5", extra_headers={"anthropic-beta": "context-1m-2025-08-07"}, **ask)
    assert upstream.requests[-1]["body"]["model"] == "claude-sonnet-5-5"
    routed, web, beta = proxy.wait_rows(3)
    assert (routed["requested_model"], routed["model"], routed["routed"]) == (
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        1,
    )
    assert routed["baseline_cost_usd"] > routed["cost_usd"] > 0  # priced at Sonnet's and Haiku's rates
    assert web["routed"] is None and web["decision"] == "skip"  # a tool-use task, and web search besides
    assert beta["routed"] is None and beta["decision"] == "skip" and "provider beta context-1m" in beta["route_reason"]
