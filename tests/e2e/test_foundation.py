"""Issue 2 end to end: a real `turnout proxy`, the official SDK configured only by `turnout env`."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest

from conftest import turnout_cmd

from turnout.ledger.request_size import prompt_tokens
from turnout.router.tokens import count_tokens


def chat(client, content="hello there", **kw):
    return client.chat.completions.create(
        model=kw.pop("model", "gpt-4o"), messages=[{"role": "user", "content": content}], **kw
    )


def test_sync_chat_is_forwarded_and_recorded(proxy, upstream):
    client = proxy.client()
    r = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = r.parse()
    assert completion.choices[0].message.content == "echo from gpt-4o: hello there"
    assert r.headers["x-request-id"].startswith("req_")
    (row,) = proxy.wait_rows(1)
    assert row["status_code"] == 200 and row["error"] is None
    assert row["provider"] == "openai" and row["endpoint"] == "chat"
    assert row["host"] == "api.openai.com" and row["path"] == "/v1/chat/completions" and row["method"] == "POST"
    assert row["requested_model"] == row["model"] == row["response_model"] == "gpt-4o"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (2, 5, 7)
    assert row["cost_usd"] == pytest.approx((2 * 2.5 + 5 * 10) / 1e6)
    assert row["latency_ms"] > 0 and row["ttft_ms"] is None and row["stream"] == 0
    assert row["finish_reason"] == "stop"
    assert json.loads(row["request_body"])["messages"][0]["content"] == "hello there"
    assert json.loads(row["response_body"])["choices"][0]["message"]["content"] == completion.choices[0].message.content
    assert row["client_addr"].startswith("127.0.0.1:")


def test_api_key_is_never_stored(proxy):
    key = "sk-proj-SECRETSECRETSECRET-abcd"
    chat(proxy.client(api_key=key))
    (row,) = proxy.wait_rows(1)
    assert row["api_key_fp"].endswith("-abcd") and len(row["api_key_fp"]) == 17
    blob = proxy.db.read_bytes()
    for suffix in ("-wal", "-shm"):
        p = proxy.db.with_name(proxy.db.name + suffix)
        blob += p.read_bytes() if p.exists() else b""
    assert b"SECRETSECRET" not in blob and b"Bearer" not in blob


def test_async_client(proxy):
    async def go():
        client = proxy.async_client()
        rs = await asyncio.gather(
            *(
                client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"n{i}"}])
                for i in range(5)
            )
        )
        await client.close()
        return rs

    rs = asyncio.run(go())
    assert sorted(r.choices[0].message.content for r in rs) == [f"echo from gpt-4o: n{i}" for i in range(5)]
    assert len(proxy.wait_rows(5)) == 5


def test_stream_without_include_usage_gets_exact_usage_and_unchanged_stream(proxy, upstream):
    client = proxy.client()
    chunks = list(chat(client, "one two three four five", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo from gpt-4o: one two three four five"
    # the client did not ask for usage: no usage-only chunk and no usage keys reach it
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert all("usage" not in c.model_dump(exclude_unset=True) for c in chunks)
    # turnout asked upstream for it
    assert upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    (row,) = proxy.wait_rows(1)
    assert row["stream"] == 1 and row["error"] is None
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 8)
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]
    body = json.loads(row["response_body"])
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == text
    assert json.loads(row["request_body"]).get("stream_options") is None  # the client's body, as sent


def test_stream_with_include_usage_is_passed_through(proxy):
    chunks = list(chat(proxy.client(), "a b", stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 2
    (row,) = proxy.wait_rows(1)
    assert row["prompt_tokens"] == 2


def test_stream_is_not_buffered(proxy):
    client = proxy.client()
    t0 = time.monotonic()
    # ten chunks 300 ms apart: a buffering proxy delivers the first with the last, a tee about 2.7 s before
    # it; the bound is half the stream, so a slow machine's handshake does not read as buffering
    stream = chat(client, "x " * 50, stream=True, extra_headers={"x-test-chunks": "10", "x-test-delay-ms": "300"})
    first = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.monotonic() - t0
    total = time.monotonic() - t0
    assert total > 2.7
    assert first < total / 2, f"first content after {first:.3f}s of a {total:.3f}s stream: buffered"


def test_tool_calls_plain_and_streamed(proxy):
    client = proxy.client()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    r = chat(client, "weather in Paris?", tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    chunks = list(chat(client, "weather in Paris?", tools=tools, stream=True))
    args = "".join(
        tc.function.arguments or "" for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())
    )
    assert json.loads(args) == {"city": "Paris", "unit": "c"}
    rows = proxy.wait_rows(2)
    assert [r["finish_reason"] for r in rows] == ["tool_calls", "tool_calls"]
    streamed = json.loads(rows[1]["response_body"])["choices"][0]["message"]["tool_calls"][0]
    assert (
        streamed["function"]["name"] == "get_weather"
        and json.loads(streamed["function"]["arguments"])["city"] == "Paris"
    )


def test_429_stays_a_rate_limit_error(proxy):
    client = proxy.client(max_retries=0)
    with pytest.raises(openai.RateLimitError) as exc:
        chat(client, model="error-429")
    assert exc.value.status_code == 429 and exc.value.code == "rate_limit_exceeded"
    assert exc.value.response.headers["retry-after-ms"] == "10"
    (row,) = proxy.wait_rows(1)
    assert row["status_code"] == 429 and "test upstream says 429" in row["error"] and row["cost_usd"] is None


def test_sdk_retries_see_the_same_errors(proxy):
    client = proxy.client(max_retries=2)
    with pytest.raises(openai.InternalServerError):
        chat(client, model="error-500")
    rows = proxy.wait_rows(3)
    assert [r["status_code"] for r in rows] == [500, 500, 500]


def test_embeddings_responses_and_legacy_completions(proxy):
    client = proxy.client()
    e = client.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    assert len(e.data) == 2
    r = client.responses.create(model="gpt-4o-mini", input="say hi")
    assert r.output_text == "echo from gpt-4o-mini: say hi"
    events = list(client.responses.create(model="gpt-4o-mini", input="say hi", stream=True))
    assert events[-1].type == "response.completed"
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="once upon")
    assert c.choices[0].text.startswith("completion of")
    rows = proxy.wait_rows(4)
    by_endpoint = {(r["endpoint"], r["stream"]): r for r in rows}
    assert by_endpoint[("embeddings", 0)]["prompt_tokens"] == 3
    assert by_endpoint[("embeddings", 0)]["cost_usd"] == pytest.approx(3 * 0.02 / 1e6)
    assert by_endpoint[("responses", 0)]["completion_tokens"] == 5
    assert (
        by_endpoint[("responses", 1)]["prompt_tokens"] == 2
        and by_endpoint[("responses", 1)]["finish_reason"] == "completed"
    )
    assert by_endpoint[("completions", 0)]["prompt_tokens"] == 2


def test_curl_and_bad_bodies(proxy, upstream):
    env = proxy.env
    base = [
        "curl",
        "-sS",
        "--proxy",
        env["HTTPS_PROXY"],
        "--cacert",
        env["CURL_CA_BUNDLE"],
        "-H",
        "authorization: Bearer sk-curl-0000000000",
    ]
    url = "https://api.openai.com/v1/chat/completions"
    out = subprocess.run(
        base
        + [
            "-H",
            "content-type: application/json",
            "-d",
            '{"model": "gpt-4o", "messages": [{"role":"user","content":"via curl"}]}',
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["choices"][0]["message"]["content"] == "echo from gpt-4o: via curl"
    # not JSON: the upstream's own 400 reaches the client, the flow is recorded with the error
    out = subprocess.run(
        base + ["-w", "\n%{http_code}", "-d", '{"model": "gpt-4o", "messa', url],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.rsplit("\n", 1)[1] == "400" and "could not parse the JSON" in out.stdout
    # gzip-encoded request body is parsed for the ledger and reaches upstream intact
    gz = gzip.compress(json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "zipped"}]}).encode())
    out = subprocess.run(
        base + ["-H", "content-encoding: gzip", "-H", "content-type: application/json", "--data-binary", "@-", url],
        input=gz,
        capture_output=True,
        check=True,
    )
    assert json.loads(out.stdout)["choices"][0]["message"]["content"] == "echo from gpt-4o: zipped"
    # an unknown path is forwarded and recorded without parsing
    out = subprocess.run(base + ["https://api.openai.com/v1/models"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["data"][0]["id"] == "gpt-4o"
    rows = proxy.wait_rows(4)
    assert rows[0]["requested_model"] == "gpt-4o" and rows[0]["error"] is None
    assert (
        rows[1]["status_code"] == 400
        and "not JSON" in (rows[1]["error"] or "")
        or "could not parse" in (rows[1]["error"] or "")
    )
    assert rows[2]["prompt_tokens"] == 1 and rows[2]["requested_model"] == "gpt-4o"
    assert rows[3]["endpoint"] is None and rows[3]["path"] == "/v1/models" and rows[3]["status_code"] == 200


def test_upstream_refusing_is_recorded_and_proxy_survives(make_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    proxy = make_proxy("--upstream", f"http://127.0.0.1:{dead}", with_upstream=False)
    client = proxy.client(max_retries=0)
    with pytest.raises(openai.APIStatusError) as exc:
        chat(client)
    assert exc.value.status_code == 502
    (row,) = proxy.wait_rows(1)
    assert row["status_code"] in (None, 502) and row["error"]
    assert proxy.proc.poll() is None
    # the failure is logged; mitmproxy's routine per-connection lines are not (turnout_connection_log)
    out = "".join(proxy.output)
    assert "error establishing server connection" in out
    assert "client connect" not in out and "server disconnect" not in out


def test_connection_log_on_request(make_proxy):
    proxy = make_proxy("--set", "turnout_connection_log=true")
    chat(proxy.client(), stream=True)
    proxy.wait_rows(1)
    out = "".join(proxy.output)
    assert "client connect" in out and "Streaming response from" in out


def test_client_abort_mid_stream_is_recorded_as_partial(proxy, upstream):
    client = proxy.client()
    stream = chat(client, "w " * 40, stream=True, extra_headers={"x-test-chunks": "20", "x-test-delay-ms": "100"})
    got = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)
        if len(got) >= 3:
            break
    stream.close()
    client.close()
    (row,) = proxy.wait_rows(1, timeout=15)
    assert row["error"] and "incomplete" in row["error"]
    partial = json.loads(row["response_body"])["choices"][0]["message"]["content"]
    assert partial.startswith("echo from gpt-4o")
    assert proxy.proc.poll() is None
    # the provider bills the prompt and what it generated before the cut: counted in gpt-4o's encoding
    assert row["usage_estimated"] == 1
    assert row["prompt_tokens"] == prompt_tokens(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "w " * 40}]}
    )
    assert row["completion_tokens"] == count_tokens(partial, "gpt-4o") > 0
    assert row["cost_usd"] == pytest.approx(row["prompt_tokens"] * 2.5e-6 + row["completion_tokens"] * 10e-6)


def test_stream_without_usage_from_the_server_is_counted(proxy):
    """Some OpenAI-compatible servers never send usage: the stream is counted, and marked as such."""
    text = "".join(
        c.choices[0].delta.content or ""
        for c in chat(proxy.client(), "count me", stream=True, extra_headers={"x-test-no-usage": "1"})
        if c.choices
    )
    (row,) = proxy.wait_rows(1)
    assert row["error"] is None and row["usage_estimated"] == 1
    assert row["completion_tokens"] == count_tokens(text, "gpt-4o") and row["prompt_tokens"] > 0 and row["cost_usd"] > 0


def _stream_in_background(client, chunks: int) -> tuple[threading.Event, list[str], list[BaseException]]:
    done, pieces, errors = threading.Event(), [], []

    def run():
        try:
            for ch in chat(
                client, "z " * 40, stream=True, extra_headers={"x-test-chunks": str(chunks), "x-test-delay-ms": "100"}
            ):
                if ch.choices and ch.choices[0].delta.content:
                    pieces.append(ch.choices[0].delta.content)
        except BaseException as e:  # noqa: BLE001 - the test reads it
            errors.append(e)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, pieces, errors


def test_sigterm_drains_flows_in_flight(proxy):
    """SIGTERM mid-stream: no new connections, the open stream finishes, its row is whole, the proxy exits 0."""
    client = proxy.client(max_retries=0)
    idle = proxy.client(max_retries=0)  # a second keep-alive connection, idle when SIGTERM comes
    chat(client, "before")
    chat(idle, "before too")
    done, pieces, errors = _stream_in_background(client, chunks=20)  # ~2 s
    time.sleep(0.6)
    proxy.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):  # draining: the listening socket is closed
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    with pytest.raises(openai.InternalServerError) as refused:  # a new request on an old connection
        chat(idle, "during the drain")
    assert refused.value.status_code == 503 and refused.value.code == "shutting_down"
    assert refused.value.response.headers["connection"] == "close"
    assert proxy.stop() == 0
    assert done.wait(5) and not errors
    rows = proxy.rows()
    assert [r["status_code"] for r in rows] == [200, 200, 200, 503]
    rows = [rows[0], rows[2]]  # the first call, the stream
    assert rows[1]["stream"] == 1 and rows[1]["error"] is None and rows[1]["completion_tokens"]
    assert json.loads(rows[1]["response_body"])["choices"][0]["message"]["content"] == "".join(pieces)
    out = "".join(proxy.output)
    assert "client disconnect" not in out and "server disconnect" not in out  # quiet to the end, not just until done


def test_sigterm_past_the_drain_records_the_stream_as_partial(make_proxy):
    proxy = make_proxy("--set", "turnout_drain=1")
    client = proxy.client(max_retries=0)
    chat(client, "before")
    done, pieces, errors = _stream_in_background(client, chunks=60)  # ~6 s, longer than the 1 s drain
    time.sleep(0.6)
    assert proxy.stop() == 0
    done.wait(5)
    rows = proxy.rows()
    assert len(rows) == 2
    assert rows[0]["error"] is None
    assert rows[1]["stream"] == 1 and rows[1]["error"] == "turnout shut down before the flow finished"
    assert pieces and errors  # the client saw the stream start, then lose its connection
    assert rows[0]["usage_estimated"] is None and rows[1]["usage_estimated"] == 1  # counted at shutdown
    assert rows[1]["completion_tokens"] == count_tokens(
        json.loads(rows[1]["response_body"])["choices"][0]["message"]["content"], "gpt-4o"
    )


def test_non_provider_hosts_are_tunnelled_untouched(proxy, tmp_path):
    """A TLS server turnout does not intercept keeps its own certificate end to end."""
    import ssl
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from certificates import self_signed  # tests/certificates.py

    cert_file, key_file = self_signed(tmp_path, ("localhost",))

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--noproxy",
                "",
                "--proxy",
                proxy.env["HTTPS_PROXY"],
                "--cacert",
                str(cert_file),
                f"https://localhost:{srv.server_address[1]}/",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == "ok"
    finally:
        srv.shutdown()
    assert proxy.rows() == []


def test_a_tunnel_that_is_neither_tls_nor_http_is_relayed_byte_for_byte(proxy):
    """CONNECT to another host carrying some other protocol: relayed as it is, nothing recorded."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"\x00greeting\r\n")  # a server that speaks first, as databases and SSH do
            conn.sendall(conn.recv(100)[::-1])

    threading.Thread(target=serve, daemon=True).start()
    port = srv.getsockname()[1]
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as c:
        c.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert c.recv(100).startswith(b"HTTP/1.1 200")
        c.sendall(b"\x01\x02raw")
        got = b""
        while len(got) < len(b"\x00greeting\r\nwar\x02\x01"):
            got += c.recv(100)
    assert got == b"\x00greeting\r\nwar\x02\x01"
    srv.close()
    assert proxy.rows() == []


def test_turnout_run_wraps_a_command(tmp_path, certs_dir, upstream):
    db = tmp_path / "run.db"
    script = tmp_path / "app.py"
    script.write_text(
        "import openai, sys\n"
        "c = openai.OpenAI(api_key='sk-run-000000000000')\n"
        "r = c.chat.completions.create(model='gpt-4o', messages=[{'role': 'user', 'content': 'from run'}])\n"
        "print(r.choices[0].message.content)\n"
        "sys.exit(3)\n"
    )
    import os

    env = {**os.environ, "TURNOUT_CERTS": str(certs_dir)}
    out = subprocess.run(
        turnout_cmd("run", "--db", str(db), "--upstream", upstream.url, "--", sys.executable, str(script)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout.strip() == "echo from gpt-4o: from run"
    assert "turnout: 1 LLM call(s) · 2+5 tokens · $0.0001" in out.stderr
    import sqlite3

    assert sqlite3.connect(db).execute("select count(*) from flows where origin is null").fetchone()[0] == 1


def test_mitmdump_script_with_set_options(tmp_path, certs_dir, upstream):
    import os

    db = tmp_path / "m.db"
    mitmdump = os.path.join(os.path.dirname(sys.executable), "mitmdump")
    from conftest import ROOT, Proxy

    proc = subprocess.Popen(
        [
            mitmdump,
            "-s",
            str(ROOT / "addons" / "turnout.py"),
            "--listen-port",
            "0",
            "--set",
            f"confdir={certs_dir}",
            "--set",
            f"turnout_db={db}",
            "--set",
            f"turnout_upstream={upstream.url}",
            "--set",
            "flow_detail=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        port = None
        for line in proc.stdout:
            if line.startswith("turnout: listening on "):
                port = int(line.rsplit(":", 1)[1])
                break
        assert port
        p = Proxy(db, [], certs_dir)
        p.port = port
        env = subprocess.run(
            turnout_cmd("env", "--port", str(port)),
            env={**os.environ, "TURNOUT_CERTS": str(certs_dir)},
            capture_output=True,
            text=True,
        ).stdout
        import shlex

        p.env = {
            line.removeprefix("export ").split("=", 1)[0]: shlex.split(line.split("=", 1)[1])[0]
            for line in env.splitlines()
        }
        assert chat(p.client()).choices[0].message.content == "echo from gpt-4o: hello there"
        assert len(p.wait_rows(1, "origin is null")) == 1  # the one call (a shadow of it, if sampled, is its own row)
    finally:
        proc.terminate()
        proc.wait(20)


def test_env_exports(proxy):
    env = proxy.env
    for k in (
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "NODE_USE_ENV_PROXY",
    ):
        assert k in env
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1" and env["NODE_USE_ENV_PROXY"] == "1"
    bundle = open(env["SSL_CERT_FILE"]).read()
    assert bundle.count("BEGIN CERTIFICATE") > 10  # system roots plus turnout's CA
    assert open(proxy.certs / "mitmproxy-ca-cert.pem").read().strip() in bundle


def test_huge_body_is_forwarded_and_recorded(proxy, upstream):
    big = "lorem ipsum " * 400_000  # ~4.8 MB
    r = chat(proxy.client(), big)
    assert r.choices[0].message.content.startswith("echo from gpt-4o: lorem ipsum")
    assert upstream.requests[-1]["body"]["messages"][0]["content"] == big
    (row,) = proxy.wait_rows(1, timeout=20)
    assert row["prompt_tokens"] == 800_000 and len(row["request_body"]) > 4_000_000


def test_upstream_timeout_is_recorded(proxy):
    client = proxy.client(max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        chat(client, "slow one", extra_headers={"x-test-hang-ms": "2000"})
    (row,) = proxy.wait_rows(1, timeout=15)
    assert row["error"] and row["status_code"] is None
    assert chat(proxy.client(), "still alive").choices[0].message.content == "echo from gpt-4o: still alive"


def test_streams_back_to_back_on_one_keep_alive_connection(proxy):
    """The usage chunk turnout strips must not end the body early (it would corrupt the next response)."""

    async def go():
        client = proxy.async_client(max_retries=0)
        texts = []
        for i in range(4):
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"keep {i}"}], stream=True
            )
            texts.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
        await client.close()
        return texts

    assert asyncio.run(go()) == [f"echo from gpt-4o: keep {i}" for i in range(4)]
    assert [r["error"] for r in proxy.wait_rows(4)] == [None] * 4
