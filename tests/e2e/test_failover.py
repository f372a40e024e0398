"""Failover across providers through a real proxy: each provider's test server on its own, the official
SDKs configured only by `turnout env`, the fallback's key from the proxy's environment."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time

import openai
import pytest
from conftest import turnout_cmd
from upstream import UpstreamServer

KEY_ENV = "TEST_FALLBACK_KEY"
FALLBACK_KEY = "sk-fallback-SECRET-0042"
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
def servers():
    made = {name: UpstreamServer().start() for name in ("openai", "anthropic", "gemini")}
    yield made
    for srv in made.values():
        srv.shutdown()


def _config(tmp_path, rule: str, circuit: str = 'failures = 2\nwindow = "60s"\ncooldown = "60s"\n') -> str:
    cfg = tmp_path / "failover.toml"
    cfg.write_text(
        rule
        + '\n[providers.openai]\napi_key_env = "TEST_FALLBACK_KEY"\n'
        + '[providers.anthropic]\napi_key_env = "TEST_FALLBACK_KEY"\n'
        + '[providers.gemini]\napi_key_env = "TEST_FALLBACK_KEY"\n'
        + "[failover_circuit]\n"
        + circuit
    )
    return str(cfg)


OPENAI_TO_ANTHROPIC = (
    '[[failover]]\nfrom = "openai"\nto = ["anthropic:claude-haiku-4-5"]\nfirst_byte_timeout = "1s"\ntimeout = "1s"\n'
)


@pytest.fixture
def failover_proxy(make_proxy, servers, tmp_path, monkeypatch):
    def start(rule: str = OPENAI_TO_ANTHROPIC, openai_url: str | None = None, key: bool = True, **kw):
        if key:
            monkeypatch.setenv(KEY_ENV, FALLBACK_KEY)
        else:
            monkeypatch.delenv(KEY_ENV, raising=False)
        ups = [f"{name}={openai_url if name == 'openai' and openai_url else srv.url}" for name, srv in servers.items()]
        args = [a for u in ups for a in ("--upstream", u)]
        return make_proxy(*args, "--config", _config(tmp_path, rule, **kw), with_upstream=False)

    return start


def test_openai_503_is_answered_by_anthropic_plain_streamed_and_with_a_tool(failover_proxy, servers):
    proxy = failover_proxy(circuit="failures = 100\n")  # every call pays the 503 here (the circuit is tested below)
    client = proxy.client(max_retries=0)
    r = client.chat.completions.create(model="error-503", messages=[{"role": "user", "content": "hello failover"}])
    assert r.choices[0].message.content == "echo from claude-haiku-4-5: hello failover"
    assert r.model == "claude-haiku-4-5" and r.choices[0].finish_reason == "stop" and r.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="error-503", messages=[{"role": "user", "content": "stream failover"}], stream=True
    )
    chunks = [c for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == (
        "echo from claude-haiku-4-5: stream failover"
    )
    tool = client.chat.completions.create(
        model="error-503", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER]
    )
    call = tool.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert tool.choices[0].finish_reason == "tool_calls"
    with client.chat.completions.stream(
        model="error-503", messages=[{"role": "user", "content": "weather, streamed?"}], tools=[WEATHER]
    ) as s:
        final = s.get_final_completion()
    streamed_call = final.choices[0].message.tool_calls[0]
    assert (streamed_call.function.name, json.loads(streamed_call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    rows = proxy.wait_rows(4)
    assert {(r["provider"], r["model"], r["failover_from"], r["failover_reason"]) for r in rows} == {
        ("anthropic", "claude-haiku-4-5", "openai:error-503", "503")
    }
    assert all(r["error"] is None and r["cost_usd"] > 0 for r in rows)
    # priced at the answering model: claude-haiku-4-5 at $1 / $5 per million
    assert rows[0]["cost_usd"] == pytest.approx((rows[0]["prompt_tokens"] * 1 + rows[0]["completion_tokens"] * 5) / 1e6)
    sent = servers["anthropic"].requests
    assert len(sent) == 4 and all(q["headers"].get("x-api-key") == FALLBACK_KEY for q in sent)
    assert sent[0]["body"]["messages"] == [{"role": "user", "content": "hello failover"}]
    assert FALLBACK_KEY.encode() not in proxy.db.read_bytes()


def test_the_circuit_opens_and_later_calls_skip_the_failing_provider(failover_proxy, servers):
    proxy = failover_proxy()
    client = proxy.client(max_retries=0)
    for i in range(4):
        r = client.chat.completions.create(model="error-503", messages=[{"role": "user", "content": f"call {i}"}])
        assert r.choices[0].message.content.startswith("echo from claude-haiku-4-5")
    # two failures open openai's circuit: calls 3 and 4 went straight to the fallback
    assert sum(1 for q in servers["openai"].requests if q["path"] == "/v1/chat/completions") == 2
    rows = proxy.wait_rows(4)
    assert [r["failover_reason"] for r in rows] == ["503", "503", "circuit open", "circuit open"]
    assert all(r["provider"] == "anthropic" for r in rows)
    db = sqlite3.connect(proxy.db)
    events = db.execute("select kind, data from events where kind like 'circuit_%' order by rowid").fetchall()
    db.close()
    assert [(kind, json.loads(data)["provider"]) for kind, data in events] == [("circuit_open", "openai")]
    out = subprocess.run(
        turnout_cmd("report", "--db", str(proxy.db), "--by", "failover", "--format", "json"),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    groups = {g["group"]: g["requests"] for g in json.loads(out)["groups"]}
    assert groups == {"openai → anthropic (503)": 2, "openai → anthropic (circuit open)": 2}


def test_after_the_cooldown_one_probe_closes_the_circuit(failover_proxy, servers):
    proxy = failover_proxy(circuit='failures = 2\ncooldown = "1s"\n')
    client = proxy.client(max_retries=0)
    for i in range(2):
        client.chat.completions.create(model="error-503", messages=[{"role": "user", "content": f"fail {i}"}])
    openai_calls = lambda: sum(1 for q in servers["openai"].requests if q["path"] == "/v1/chat/completions")  # noqa: E731
    assert (
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "open"}]).model
        == ("claude-haiku-4-5")
        and openai_calls() == 2
    )  # open: not even a healthy model's call reaches openai
    time.sleep(1.2)
    probe = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "probe"}])
    assert probe.model == "gpt-4o" and openai_calls() == 3
    after = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "closed"}])
    assert after.model == "gpt-4o"
    rows = proxy.wait_rows(5)
    assert [r["provider"] for r in rows] == ["anthropic", "anthropic", "anthropic", "openai", "openai"]
    db = sqlite3.connect(proxy.db)
    kinds = [k for (k,) in db.execute("select kind from events where kind like 'circuit_%' order by rowid")]
    db.close()
    assert kinds == ["circuit_open", "circuit_half_open", "circuit_closed"]


def test_429_with_retry_after_opens_the_circuit_for_that_long(failover_proxy, servers):
    proxy = failover_proxy(circuit="failures = 100\n")
    client = proxy.client(max_retries=0)
    first = client.chat.completions.create(
        model="error-429", messages=[{"role": "user", "content": "a"}], extra_headers={"x-test-retry-after": "300"}
    )
    assert first.model == "claude-haiku-4-5"
    client.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "b"}])
    assert sum(1 for q in servers["openai"].requests if q["path"] == "/v1/chat/completions") == 1


def test_refused_connection_and_a_hang_fail_over(failover_proxy, servers, make_proxy):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connections are refused
    proxy = failover_proxy(openai_url=f"http://127.0.0.1:{port}")
    client = proxy.client(max_retries=0)
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "refused"}])
    assert r.model == "claude-haiku-4-5"
    (row,) = proxy.wait_rows(1)
    assert row["failover_reason"] == "connect" and row["failover_from"] == "openai:gpt-4o"
    proxy.stop()
    hang = failover_proxy()  # the openai server holds the answer past first_byte_timeout (1s)
    r = hang.client(max_retries=0).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "slow"}], extra_headers={"x-test-hang-ms": "2500"}
    )
    assert r.model == "claude-haiku-4-5"
    assert hang.wait_rows(1)[0]["failover_reason"] == "timeout"


def test_anthropic_client_fails_over_to_openai(failover_proxy, servers):
    rule = '[[failover]]\nfrom = "anthropic"\nto = ["openai:gpt-4o-mini"]\n'
    proxy = failover_proxy(rule)
    client = proxy.anthropic_client(max_retries=0)
    msg = client.messages.create(
        model="error-503", max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": "hi from claude"}]
    )
    assert msg.content[0].text == "echo from gpt-4o-mini: hi from claude" and msg.stop_reason == "end_turn"
    with client.messages.stream(
        model="error-503", max_tokens=50, messages=[{"role": "user", "content": "stream from claude"}]
    ) as s:
        streamed = s.get_final_message()
    assert streamed.content[0].text.strip() == "echo from gpt-4o-mini: stream from claude"
    assert streamed.usage.output_tokens > 0
    tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}]
    tool_msg = client.messages.create(
        model="error-503", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather?"}]
    )
    assert tool_msg.content[0].type == "tool_use" and tool_msg.content[0].input == {"city": "Paris", "unit": "c"}
    sent = servers["openai"].requests
    assert sent[0]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert {k.lower(): v for k, v in sent[0]["headers"].items()}["authorization"] == f"Bearer {FALLBACK_KEY}"
    rows = proxy.wait_rows(3)
    assert {(r["provider"], r["endpoint"], r["failover_from"]) for r in rows} == {
        ("openai", "messages", "anthropic:error-503")
    }


def test_untranslatable_no_credentials_and_all_failing_give_the_original_error(failover_proxy, servers):
    rule = '[[failover]]\nfrom = "openai"\nto = ["anthropic:error-500", "gemini:error-503"]\n'
    proxy = failover_proxy(rule, circuit="failures = 100\n")
    client = proxy.client(max_retries=0)
    with pytest.raises(openai.InternalServerError) as exc:  # every target fails: the original 503
        client.chat.completions.create(model="error-503", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 503 and exc.value.body["message"] == "test upstream says 503"
    with pytest.raises(openai.InternalServerError):  # n=2 cannot be translated
        client.chat.completions.create(model="error-503", messages=[{"role": "user", "content": "y"}], n=2)
    rows = proxy.wait_rows(2)
    assert rows[0]["status_code"] == 503 and rows[0]["failover_from"] is None
    assert rows[0]["failover_tried"] == "openai:error-503=503; anthropic:error-500=500; gemini:error-503=503"
    assert "untranslatable: n > 1" in rows[1]["failover_tried"]
    proxy.stop()
    nokey = failover_proxy(rule, key=False)
    with pytest.raises(openai.InternalServerError):
        nokey.client(max_retries=0).chat.completions.create(
            model="error-503", messages=[{"role": "user", "content": "z"}]
        )
    assert "no credentials" in nokey.wait_rows(1)[0]["failover_tried"]


def test_a_fallback_that_dies_mid_stream_ends_the_stream_with_an_error(failover_proxy):
    proxy = failover_proxy()
    client = proxy.client(max_retries=0)
    stream = client.chat.completions.create(
        model="error-503", messages=[{"role": "user", "content": "one two three four [[die-after: 4]]"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            got.append(chunk)
    assert got and "mid-stream" in str(exc.value)
    (row,) = proxy.wait_rows(1)
    assert row["error"] and row["failover_from"] == "openai:error-503"


def test_gemini_client_fails_over_to_openai(failover_proxy):
    rule = '[[failover]]\nfrom = "gemini"\nto = ["openai:gpt-4o-mini"]\n'
    proxy = failover_proxy(rule)
    client = proxy.gemini_client()
    r = client.models.generate_content(model="error-503", contents="gemini falls over")
    assert r.text == "echo from gpt-4o-mini: gemini falls over"
    chunks = [c.text for c in client.models.generate_content_stream(model="error-503", contents="gemini streams over")]
    assert "".join(t or "" for t in chunks) == "echo from gpt-4o-mini: gemini streams over"
    rows = proxy.wait_rows(2)
    assert [(r["provider"], r["endpoint"], r["failover_from"]) for r in rows] == [
        ("openai", "generate", "gemini:error-503"), ("openai", "stream", "gemini:error-503")
    ]  # fmt: skip


def test_a_healthy_provider_is_relayed_byte_for_byte(failover_proxy, servers):
    proxy = failover_proxy()
    client = proxy.client(max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "ok"}])
    assert raw.headers.get("x-turnout-failover") is None and raw.parse().model == "gpt-4o"
    with pytest.raises(openai.BadRequestError):  # a 400 is the client's own: no failover
        client.chat.completions.create(model="error-400", messages=[{"role": "user", "content": "bad"}])
    assert len(servers["anthropic"].requests) == 0
