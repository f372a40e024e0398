"""Issue 13 end to end: what breaking turnout from outside found, each through a real `turnout proxy`.

Malformed characters, deep nesting, HTTP/2 bodies without a length, the cache's tenants, keys in
query strings, team budgets, bodies cut short: the proxy answers, records a row, and sends nothing
anywhere but the configured upstream.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import openai
import pytest

from conftest import turnout_cmd
from rawclient import h2_post_without_length, https

NO_CACHE = ("--set", "turnout_cache=false")


def body(content="hello there", model="gpt-4o", **kw) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}], **kw}).encode()


def post(proxy, payload: bytes, headers=(), path="/v1/chat/completions", host="api.openai.com"):
    return https(
        proxy.port, proxy.env["SSL_CERT_FILE"], "POST", path, host=host,
        headers=[("content-type", "application/json"), *headers], body=payload,
    )  # fmt: skip


def ledger_bytes(db: Path) -> bytes:
    blob = db.read_bytes()
    for suffix in ("-wal", "-shm"):
        p = db.with_name(db.name + suffix)
        blob += p.read_bytes() if p.exists() else b""
    return blob


# -- 1. one malformed character must not stop the ledger ------------------------------------------


def test_surrogates_and_raw_bytes_never_stop_the_ledger(make_proxy, upstream):
    proxy = make_proxy(*NO_CACHE)
    client = proxy.client()
    auth = ("authorization", "Bearer sk-test-key-0001")
    # the SDK refuses to send a lone surrogate; a client's own JSON encoder (ensure_ascii) does not
    assert post(proxy, body("a\udc00b", user="u\udc00"), headers=[auth]).status == 200
    assert post(proxy, body("lone model", model="gpt-4o\udc00"), headers=[auth]).status == 200
    assert post(proxy, body("raw team"), headers=[auth, ("x-turnout-team", b"t\xffam")]).status == 200
    # the model's own output: an emoji's surrogate pair split across two stream chunks
    pieces = json.dumps(["smile ", "\ud83d", "\ude00", " done"])
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "split"}],
        stream=True,
        extra_headers={"x-test-pieces": pieces},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "smile \ud83d\ude00 done"
    for i in range(20):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"normal {i}"}])
    rows = proxy.wait_rows(24)
    assert len(rows) == 24, f"only {len(rows)} of 24 rows landed"
    by_content = {json.loads(r["request_body"])["messages"][0]["content"]: r for r in rows}
    assert by_content["a\udc00b"]["user"] == "u\ufffd"
    assert by_content["lone model"]["requested_model"] == "gpt-4o\ufffd"
    assert by_content["raw team"]["team"] == "t\ufffdam"
    answer = json.loads(by_content["split"]["response_body"])["choices"][0]["message"]["content"]
    assert answer == "smile 😀 done"  # the pair joined back into its character
    started = time.monotonic()
    assert proxy.stop() == 0
    assert time.monotonic() - started < 10


# -- 2. a failing or unreadable request never leaves unguarded -------------------------------------


def test_deep_nesting_is_refused_with_a_clear_error_and_recorded(make_proxy, upstream):
    proxy = make_proxy(*NO_CACHE)
    before = len(upstream.requests)
    deep_content = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": [[[0]]]}]})
    nested = deep_content.replace("[[[0]]]", "[" * 990 + "0" + "]" * 990).encode()
    very_deep = b'{"model": "gpt-4o", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for payload in (nested, very_deep):
        r = post(proxy, payload, headers=[("authorization", "Bearer sk-test-key-0001")])
        assert r.status == 400, r
        err = json.loads(r.body)["error"]
        assert err["code"] == "turnout_body_rejected" and "deeper than" in err["message"]
    assert len(upstream.requests) == before  # neither went anywhere
    rows = proxy.wait_rows(2)
    assert [r["status_code"] for r in rows] == [400, 400] and all("deeper than" in r["error"] for r in rows)


def test_http2_body_without_content_length_reaches_an_http1_upstream_framed(make_proxy, upstream):
    proxy = make_proxy(*NO_CACHE)
    before = len(upstream.requests)
    smuggled = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-other-tenant\r\ncontent-length: 2\r\n\r\n{}"
    payload = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "framed?"}]}).encode()
    r = h2_post_without_length(
        proxy.port, proxy.env["SSL_CERT_FILE"], "/v1/chat/completions", payload,
        [("authorization", "Bearer sk-test-key-0001"), ("content-type", "application/json")],
    )  # fmt: skip
    assert r.status == 200 and json.loads(r.body)["choices"][0]["message"]["content"] == "echo from gpt-4o: framed?"
    time.sleep(0.3)
    got = upstream.requests[before:]
    assert len(got) == 1, got
    assert got[0]["body"]["messages"][0]["content"] == "framed?"
    assert got[0]["headers"].get("content-length") == str(len(payload))
    # and a body that *looks like* a request stays a body
    r = h2_post_without_length(
        proxy.port, proxy.env["SSL_CERT_FILE"], "/v1/chat/completions", smuggled,
        [("authorization", "Bearer sk-test-key-0001")],
    )  # fmt: skip
    time.sleep(0.3)
    assert len(upstream.requests) == before + 2
    assert len(proxy.wait_rows(2)) == 2


# -- 4. the cache never crosses tenants --------------------------------------------------------------


def test_cache_is_scoped_by_every_credential_and_skips_requests_without_one(make_proxy, upstream, tmp_path):
    proxy = make_proxy()
    payload = body("cache tenancy", temperature=0)

    def sent(headers=(), path="/v1/chat/completions") -> str:
        r = post(proxy, payload, headers=headers, path=path)
        assert r.status == 200
        return r.headers.get("x-turnout-cache", "none")

    assert sent([("x-api-key", "key-X-000000000001")]) == "miss"
    assert sent([("x-api-key", "key-X-000000000001")]) == "hit"  # the same tenant: served
    assert sent([("x-api-key", "key-Y-000000000002")]) == "miss"
    assert sent([("authorization", "Basic YWxpY2U6cHc=")]) == "miss"  # alice
    assert sent([("authorization", "Basic Ym9iOnB3")]) == "miss"  # bob
    assert sent(path="/v1/chat/completions?api-key=query-key-A") == "miss"
    assert sent(path="/v1/chat/completions?api-key=query-key-B") == "miss"
    before = len(upstream.requests)
    assert sent() == "none" and sent() == "none"  # no credential at all: never cached
    assert len(upstream.requests) == before + 2
    rows = proxy.wait_rows(9)
    assert [r["cache"] for r in rows][-2:] == ["skip", "skip"]


def test_team_cache_scope_trusts_the_config_not_a_client_header(make_proxy, tmp_path):
    from turnout.ledger.keys import key_fingerprint

    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[attribution]\nkeys = {{ "{key_fingerprint("sk-payments-key-0001")}" = "payments" }}\n')
    proxy = make_proxy("--config", str(cfg), "--set", "turnout_cache_scope=team")
    payload = body("team secret", temperature=0)
    first = post(proxy, payload, headers=[("authorization", "Bearer sk-payments-key-0001")])
    again = post(proxy, payload, headers=[("authorization", "Bearer sk-payments-key-0001")])
    assert (first.headers["x-turnout-cache"], again.headers["x-turnout-cache"]) == ("miss", "hit")
    intruder = post(
        proxy, payload, headers=[("authorization", "Bearer sk-someone-else-01"), ("x-turnout-team", "payments")]
    )
    assert intruder.headers["x-turnout-cache"] == "miss"
    rows = proxy.wait_rows(3)
    assert rows[2]["team"] == "payments" and rows[2]["team_source"] == "header"  # attributed, not trusted


# -- 5. keys in query strings are never stored -------------------------------------------------------


def test_query_string_keys_are_redacted_in_ledger_logs_and_events(make_proxy):
    proxy = make_proxy(*NO_CACHE, "-v")
    r = post(proxy, body("query key"), path="/v1/chat/completions?api-key=SECRETQUERYKEY123&key=SECRETGEMINI456&x=1")
    assert r.status == 200
    (row,) = proxy.wait_rows(1)
    assert row["path"] == "/v1/chat/completions?api-key=REDACTED&key=REDACTED&x=1"
    assert proxy.stop() == 0
    blob = ledger_bytes(proxy.db)
    log = "".join(proxy.output)
    assert "/v1/chat/completions" in log  # -v logs the flow …
    for secret in ("SECRETQUERYKEY123", "SECRETGEMINI456", "sk-test-key-0001"):
        assert secret.encode() not in blob
        assert secret not in log  # … with its credentials redacted


# -- 6. team budgets hold, however the team is named ---------------------------------------------------


def test_team_budget_holds_for_key_labels_and_headers(make_proxy, tmp_path):
    from turnout.ledger.keys import key_fingerprint

    cfg = tmp_path / "b.toml"
    cfg.write_text(
        f'[attribution]\nkeys = {{ "{key_fingerprint("sk-search-team-key-01")}" = "search" }}\n'
        '[[budgets]]\nname = "search-daily"\nscope = "team"\nmatch = "search"\nwindow = "day"\nrequests = 2\n'
    )
    proxy = make_proxy("--config", str(cfg), *NO_CACHE)
    labelled = proxy.client(api_key="sk-search-team-key-01", max_retries=0)
    for i in range(2):
        labelled.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}])
    with pytest.raises(openai.RateLimitError) as ei:
        labelled.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q3"}])
    assert ei.value.body["code"] == "budget_exceeded"
    # the labelled key cannot move itself to another team with a header
    with pytest.raises(openai.RateLimitError):
        labelled.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "q4"}], extra_headers={"x-turnout-team": "other"}
        )
    # unlabelled traffic that names the team counts under it too
    other = proxy.client(api_key="sk-unlabelled-key-0001", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        other.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "q5"}], extra_headers={"x-turnout-team": "search"}
        )
    other.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q6"}])  # no team: no budget
    rows = proxy.wait_rows(6)
    assert [(r["team"], r["status_code"]) for r in rows] == [
        ("search", 200),
        ("search", 200),
        ("search", 429),
        ("search", 429),
        ("search", 429),
        (None, 200),
    ]
    assert [r["team_source"] for r in rows] == ["key", "key", "key", "key", "header", None]


# -- also found --------------------------------------------------------------------------------------


def test_cut_and_non_json_answers_are_recorded_as_the_client_got_them(make_proxy):
    proxy = make_proxy(*NO_CACHE)
    auth = ("authorization", "Bearer sk-test-key-0001")
    r = post(proxy, body("cut"), headers=[auth, ("x-test-body", json.dumps('{"choices": [')), ("x-test-cut", "50")])
    assert r.status == 502
    r = post(
        proxy,
        body("html"),
        headers=[auth, ("x-test-body", json.dumps("<html>portal</html>")), ("x-test-content-type", "text/html")],
    )
    assert r.status == 200
    cut, html = proxy.wait_rows(2)
    assert cut["status_code"] == 502 and "did not arrive whole" in cut["error"]
    assert html["status_code"] == 200 and html["error"] == "answer is not JSON (text/html)"


def test_savings_count_no_cache_hit_as_a_paid_call(make_proxy, tmp_path):
    proxy = make_proxy()
    client = proxy.client()
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o", temperature=0, messages=[{"role": "user", "content": "What is the capital of France?"}]
        )
    rows = proxy.wait_rows(3)
    assert [r["cache"] for r in rows] == ["miss", "hit", "hit"]
    assert rows[1]["projected_cost_usd"] is None and rows[0]["projected_cost_usd"] is not None
    proxy.stop()
    out = subprocess.run(
        turnout_cmd("savings", "--db", str(proxy.db), "--format", "json"), capture_output=True, text=True, check=True
    )
    totals = json.loads(out.stdout)["totals"]
    assert totals["calls"] == 1 and totals["cache_hits"] == 2 and totals["saving_usd"] > 0


def test_listening_beyond_loopback_without_proxyauth_warns(make_proxy):
    proxy = make_proxy("--host", "0.0.0.0")
    time.sleep(0.5)
    assert any("beyond loopback with no proxyauth" in line for line in proxy.output)
    quiet = make_proxy()
    time.sleep(0.5)
    assert not any("beyond loopback" in line for line in quiet.output)


def test_a_killed_store_does_not_hold_sigterm(make_proxy, tmp_path):
    """The ledger's directory turns read-only mid-run: traffic is answered, the proxy says the ledger is
    failing, and SIGTERM exits in seconds with the unwritten rows saved beside the ledger."""
    db = tmp_path / "ro" / "ledger.db"
    db.parent.mkdir()
    proxy = make_proxy(*NO_CACHE, db=db)
    client = proxy.client()
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "before"}])
    proxy.wait_rows(1)
    conn = sqlite3.connect(db)
    conn.execute("begin exclusive")  # another process holds the write lock: every write now fails with 'locked'
    try:
        r = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "during"}]
        )
        deadline = time.monotonic() + 60
        while r.headers.get("x-turnout-ledger") != "failing" and time.monotonic() < deadline:
            r = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "during"}]
            )
        assert r.headers.get("x-turnout-ledger") == "failing"
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 20
    finally:
        conn.rollback()
        conn.close()
    spilled = list(db.parent.glob("ledger.db.unwritten-*.jsonl"))
    assert spilled, "rows not written must be kept somewhere"
    kept = [json.loads(line) for f in spilled for line in f.read_text().splitlines()]
    assert any(k["table"] == "flows" and "during" in (k["row"].get("request_body") or "") for k in kept)


# -- upstream down, hung, silent ---------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_upstream_answers_in_the_providers_format(make_proxy):
    proxy = make_proxy("--upstream", f"http://127.0.0.1:{free_port()}", *NO_CACHE)
    client = proxy.client(max_retries=0)
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "anyone?"}])
    assert ei.value.status_code == 502
    payload = ei.value.response.json()
    assert payload["error"]["type"] == "turnout_upstream_unreachable"
    assert ei.value.response.headers["x-should-retry"] == "true"
    (row,) = proxy.wait_rows(1)
    assert row["status_code"] is None and row["error"]


def test_hung_upstream_gets_a_504_and_a_row_after_the_timeout(make_proxy, upstream):
    proxy = make_proxy("--set", "turnout_upstream_timeout=1s", *NO_CACHE)
    client = proxy.client(max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "slow"}], extra_headers={"x-test-hang-ms": "4000"}
        )
    took = time.monotonic() - started
    assert ei.value.status_code == 504 and 0.9 < took < 3.5
    assert ei.value.response.json()["error"]["type"] == "turnout_upstream_timeout"
    (row,) = proxy.wait_rows(1)
    assert row["status_code"] == 504 and "turnout_upstream_timeout" in row["error"]
    # the proxy goes on serving after it
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "fine"}])


def test_silent_stream_is_cut_by_the_idle_timeout_and_recorded(make_proxy):
    proxy = make_proxy("--set", "turnout_stream_idle_timeout=1s", *NO_CACHE)
    client = proxy.client(max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.APIError):
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "one two three four"}], stream=True,
            extra_headers={"x-test-chunks": "3", "x-test-delay-ms": "3000"},
        )  # fmt: skip
        for _ in stream:
            pass
    assert time.monotonic() - started < 3
    (row,) = proxy.wait_rows(1)
    assert "turnout_stream_idle_timeout" in row["error"] and row["prompt_tokens"] is not None


def test_durable_mode_commits_each_row_before_the_answer_ends(make_proxy):
    """SIGKILL right after the last answer: with turnout_durable every answered call is in the ledger."""
    proxy = make_proxy("--set", "turnout_durable=true", *NO_CACHE)
    client = proxy.client()
    for i in range(15):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"audit {i}"}])
        assert len(proxy.rows()) == i + 1  # already committed when the SDK returned
    # a stream's last byte is its end of message (the chunked terminator): read to it, as HTTP defines the end
    # (the sync SDK stops at `data: [DONE]`, before it, and so can see the answer before the row is on disk)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "audit stream"}], stream=True
    ) as r:
        assert r.read().endswith(b"data: [DONE]\n\n")
    proxy.stop(signal.SIGKILL)
    rows = proxy.rows()
    assert len(rows) == 16 and rows[-1]["stream"] == 1 and rows[-1]["prompt_tokens"] is not None
