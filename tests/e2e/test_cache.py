"""Issue 4 end to end: the cache and CI record/replay through a real turnout proxy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import openai
import pytest

from conftest import turnout_cmd


def ask(client, content="what is the capital of France?", **kw):
    return client.chat.completions.with_raw_response.create(
        model=kw.pop("model", "gpt-4o"), messages=[{"role": "user", "content": content}], **kw
    )


def upstream_count(upstream, content):
    return sum(1 for r in upstream.requests if isinstance(r["body"], dict) and json.dumps(r["body"]).count(content))


def test_second_identical_call_is_a_hit(proxy, upstream):
    client = proxy.client()
    first = ask(client, "cache me once")
    t0 = time.perf_counter()
    second = ask(client, "cache me once", user="someone-else", metadata={"run": "2"})
    assert first.headers["x-turnout-cache"] == "miss" and second.headers["x-turnout-cache"] == "hit"
    # a hit still carries the (deferred) routing decision, like any other answer
    assert second.headers["x-turnout-decision"] == first.headers["x-turnout-decision"] == "observe:route"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert upstream_count(upstream, "cache me once") == 1
    rows = proxy.wait_rows(2)
    assert [r["cache"] for r in rows] == ["miss", "hit"]
    assert rows[1]["cost_usd"] == 0 and rows[1]["saved_usd"] == pytest.approx(rows[0]["cost_usd"])
    assert rows[1]["prompt_tokens"] == rows[0]["prompt_tokens"]
    assert time.perf_counter() - t0 < 1.0


def test_stream_and_non_stream_share_entries(proxy, upstream):
    client = proxy.client()
    plain = ask(client, "cross one").parse().choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "cross one"}], stream=True
        )
        if c.choices
    )
    assert streamed == plain
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "cross two"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    hit = ask(client, "cross two")
    assert hit.headers["x-turnout-cache"] == "hit" and hit.parse().choices[0].message.content == text
    again = list(
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "cross two"}], stream=True)
    )
    assert all(c.usage is None for c in again), "usage chunk only when include_usage was asked"
    with_usage = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "cross two"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage.completion_tokens == chunks[-1].usage.completion_tokens
    assert upstream_count(upstream, "cross one") == 1 and upstream_count(upstream, "cross two") == 1


def test_rebuilt_stream_carries_tool_calls(proxy):
    client = proxy.client()
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
    ]
    live = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=tools
    )
    with client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=tools
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert (
        final.choices[0].message.tool_calls[0].function.arguments
        == live.choices[0].message.tool_calls[0].function.arguments
    )
    assert final.choices[0].finish_reason == "tool_calls"
    assert proxy.wait_rows(2)[1]["cache"] == "hit"


def test_responses_and_embeddings_hits(proxy, upstream):
    client = proxy.client()
    live = client.responses.create(model="gpt-4o-mini", input="responses cache")
    with client.responses.stream(model="gpt-4o-mini", input="responses cache") as s:
        final = s.get_final_response()
    assert final.output_text == live.output_text
    e1 = client.embeddings.create(model="text-embedding-3-small", input="vec")
    e2 = client.embeddings.create(model="text-embedding-3-small", input="vec")
    assert e1.data[0].embedding == e2.data[0].embedding
    assert upstream_count(upstream, "responses cache") == 1
    rows = proxy.wait_rows(4)
    assert [r["cache"] for r in rows] == ["miss", "hit", "miss", "hit"]


def test_keys_do_not_share_unless_scope_is_shared(make_proxy, upstream):
    proxy = make_proxy()
    ask(proxy.client(api_key="sk-tenant-a-00000000"), "tenant question")
    b = ask(proxy.client(api_key="sk-tenant-b-00000000"), "tenant question")
    assert b.headers["x-turnout-cache"] == "miss"
    shared = make_proxy("--set", "turnout_cache_scope=shared")
    ask(shared.client(api_key="sk-tenant-a-00000000"), "shared question")
    assert ask(shared.client(api_key="sk-tenant-b-00000000"), "shared question").headers["x-turnout-cache"] == "hit"


def test_ttl_expiry(make_proxy):
    proxy = make_proxy("--set", "turnout_cache_ttl=1")
    client = proxy.client()
    ask(client, "short lived")
    assert ask(client, "short lived").headers["x-turnout-cache"] == "hit"
    time.sleep(1.6)
    assert ask(client, "short lived").headers["x-turnout-cache"] == "miss"


def test_lru_eviction(make_proxy):
    proxy = make_proxy("--set", "turnout_cache_max_entries=2")
    client = proxy.client()
    for q in ("q-a", "q-b"):
        ask(client, q)
    proxy.wait_rows(2)
    assert ask(client, "q-a").headers["x-turnout-cache"] == "hit"  # a is now the most recent
    ask(client, "q-c")  # evicts b, the least recently used
    proxy.wait_rows(4)
    assert ask(client, "q-a").headers["x-turnout-cache"] == "hit"
    assert ask(client, "q-b").headers["x-turnout-cache"] == "miss"


def test_bypass_and_what_is_never_cached(proxy, upstream):
    client = proxy.client(max_retries=0)
    ask(client, "fresh please")
    assert ask(client, "fresh please", extra_headers={"x-turnout-cache": "no"}).headers["x-turnout-cache"] == "bypass"
    assert (
        ask(client, "fresh please", extra_headers={"cache-control": "no-cache"}).headers["x-turnout-cache"] == "bypass"
    )
    assert (
        "x-turnout-cache" not in upstream.requests[-1]["headers"]
        and "X-Turnout-Cache" not in upstream.requests[-1]["headers"]
    )
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            ask(client, "errors", model="error-429")
    # a stream the client abandons is never cached
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "partial " * 20}],
        stream=True,
        extra_headers={"x-test-chunks": "20", "x-test-delay-ms": "50"},
    )
    next(iter(stream))
    stream.close()
    time.sleep(0.5)
    assert ask(client, "partial " * 20).headers["x-turnout-cache"] == "miss"
    assert upstream_count(upstream, "errors") == 2


def test_nondeterministic_opt_out(make_proxy):
    proxy = make_proxy("--set", "turnout_cache_nondeterministic=false")
    client = proxy.client()
    ask(client, "sampled", temperature=0.9)
    assert ask(client, "sampled", temperature=0.9).headers.get("x-turnout-cache") is None
    ask(client, "greedy", temperature=0)
    assert ask(client, "greedy", temperature=0).headers["x-turnout-cache"] == "hit"


def test_cache_survives_restart(make_proxy, tmp_path):
    db = tmp_path / "persist.db"
    p1 = make_proxy(db=db)
    ask(p1.client(), "remember me")
    p1.stop()
    p2 = make_proxy(db=db)
    assert ask(p2.client(), "remember me").headers["x-turnout-cache"] == "hit"


APP = """
import openai, sys
client = openai.OpenAI(api_key=sys.argv[2], max_retries=0)
for q in sys.argv[1].split(","):
    s = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": q}], stream=q.startswith("s"))
    text = "".join(c.choices[0].delta.content or "" for c in s if c.choices) if q.startswith("s") else s.choices[0].message.content
    assert text.endswith(q), text
print("ok")
"""


def _run(tmp_path, certs_dir, *args, questions, key="sk-ci-0000000000000"):
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {**os.environ, "TURNOUT_CERTS": str(certs_dir)}
    return subprocess.run(
        turnout_cmd("run", "--db", str(tmp_path / "run.db"), *args, "--", sys.executable, str(app), questions, key),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_record_then_replay_offline(tmp_path, certs_dir, upstream):
    rec = tmp_path / "llm-recording.db"
    out = _run(tmp_path, certs_dir, "--upstream", upstream.url, "--record", str(rec), questions="one,stwo,three")
    assert out.returncode == 0, out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    before = len(upstream.requests)
    # replay: no network (the upstream is a dead port), a different API key, same answers
    out = _run(
        tmp_path,
        certs_dir,
        "--upstream",
        dead,
        "--replay",
        str(rec),
        questions="one,stwo,three",
        key="sk-other-999999999",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    # a changed prompt fails clearly, naming the field
    out = _run(tmp_path, certs_dir, "--upstream", dead, "--replay", str(rec), questions="one,CHANGED")
    assert out.returncode != 0
    assert "turnout_replay_miss" in out.stderr or "replay miss" in out.stderr
    assert "messages[0].content" in out.stderr and "CHANGED" in out.stderr
    assert len(upstream.requests) == before
    # record + replay: replay what exists, record what is new
    out = _run(
        tmp_path,
        certs_dir,
        "--upstream",
        upstream.url,
        "--record",
        str(rec),
        "--replay",
        str(rec),
        questions="one,four",
    )
    assert out.returncode == 0, out.stderr
    assert len(upstream.requests) == before + 1
    out = _run(tmp_path, certs_dir, "--upstream", dead, "--replay", str(rec), questions="four,one")
    assert out.returncode == 0, out.stderr


def test_proxy_replay_mode(make_proxy, tmp_path):
    rec = tmp_path / "rec.db"
    p1 = make_proxy("--record", str(rec))
    ask(p1.client(), "long running")
    p1.stop()
    p2 = make_proxy("--replay", str(rec), with_upstream=False)
    client = p2.client(max_retries=0)
    assert ask(client, "long running").headers["x-turnout-cache"] == "replay"
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "never recorded")
    assert (
        exc.value.body["type"] == "turnout_replay_miss"
        if isinstance(exc.value.body, dict) and "type" in exc.value.body
        else "turnout_replay_miss" in str(exc.value)
    )


def test_config_cache_table_is_honoured_and_unknown_keys_refused(make_proxy, tmp_path, upstream):
    import subprocess

    from conftest import turnout_cmd

    cfg = tmp_path / "c.toml"
    cfg.write_text("[cache]\nenabled = false\n")
    proxy = make_proxy("--config", str(cfg))
    client = proxy.client()
    before = len(upstream.requests)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", temperature=0, messages=[{"role": "user", "content": "cfg off"}])
    assert len(upstream.requests) == before + 2  # [cache] enabled = false: both went upstream
    bad = tmp_path / "bad.toml"
    for text, needle in (
        ("[cache]\nttl_seconds = 5\n", "unknown key(s) ['ttl_seconds']"),
        ("[proxy]\nport = 1\n", "unknown table(s) ['proxy']"),
    ):
        bad.write_text(text)
        out = subprocess.run(
            turnout_cmd("proxy", "--port", "0", "--config", str(bad), "--db", str(tmp_path / "x.db")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and needle in out.stdout + out.stderr, out.stdout + out.stderr


def test_the_config_reference_in_the_docs_is_accepted_whole(make_proxy, tmp_path):
    """docs/config.md is the one reference of every key: a proxy started with it, unchanged, runs."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "config.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    cfg = tmp_path / "reference.toml"
    cfg.write_text(example)
    proxy = make_proxy("--config", str(cfg))
    client = proxy.client()
    r = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "ref"}])
    assert r.http_response.status_code == 200
