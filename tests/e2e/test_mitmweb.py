"""`turnout proxy --web`: mitmweb's own HTTP API shows turnout's comment, marks and content views on LLM flows."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

import pytest

PASSWORD = "turnout-test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Web:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        # never through the proxy: the test process may carry HTTPS_PROXY
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {PASSWORD}"})
        with self.opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def flows(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            flows = [f for f in self.get("/flows") if f.get("request", {}).get("path", "").startswith("/v1/")]
            done = [f for f in flows if f.get("response") and f.get("comment")]
            if len(done) >= n or time.monotonic() > deadline:
                return done
            time.sleep(0.1)


@pytest.fixture
def web(make_proxy):
    port = free_port()
    proxy = make_proxy("--web", "--web-port", str(port), "--set", f"web_password={PASSWORD}")
    return proxy, Web(port)


def test_mitmweb_shows_conversation_stream_and_comment(web) -> None:
    proxy, api = web
    client = proxy.client()
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
    ask = dict(
        model="gpt-4o",
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
    )
    client.chat.completions.create(**ask)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to the stream"}], stream=True
    )
    answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "hello to the stream" in answer

    client.chat.completions.create(**ask)  # the same call again: answered from turnout's cache

    flows = api.flows(3)
    assert len(flows) == 3, flows
    by_model: dict[str, list[dict[str, Any]]] = {}
    for f in flows:
        by_model.setdefault(
            json.loads(api.get(f"/flows/{f['id']}/request/content/Raw.json")["text"])["model"], []
        ).append(f)
    (plain, repeat), (streamed,) = by_model["gpt-4o"], by_model["gpt-4o-mini"]

    # a cache hit is marked ⚡ in the flow list, and says so in its comment
    assert repeat["marked"] == "⚡" and "cache hit" in repeat["comment"], repeat
    assert plain["marked"] == "" and streamed["marked"] == ""

    # the flow comment turnout's Record writes: model · tokens · cost …
    assert plain["comment"].startswith("gpt-4o") and " tok" in plain["comment"]
    assert streamed["comment"].startswith("gpt-4o-mini")

    # the request renders as a conversation, chosen automatically over the JSON view
    req = api.get(f"/flows/{plain['id']}/request/content/auto.json")
    assert req["view_name"] == "LLM Conversation"
    text = req["text"]
    assert "── system ──\nYou are terse." in text and "── user ──\nWeather in Paris?" in text
    assert "get_weather(city: string) — Weather now" in text

    # the non-streamed answer: the tool call, readable
    resp = api.get(f"/flows/{plain['id']}/response/content/auto.json")
    assert resp["view_name"] == "LLM Conversation" and "→ tool call get_weather(" in resp["text"]

    # the streamed answer (kept by store_streamed_bodies): assembled, then its events
    sse = api.get(f"/flows/{streamed['id']}/response/content/auto.json")
    assert sse["view_name"] == "LLM Stream", sse
    assert "assembled answer:" in sse["text"] and "hello to the stream" in sse["text"]
    assert "events ──" in sse["text"] and "[DONE]" in sse["text"]

    # the flow list shows the comment column; streamed bodies are kept for the views
    options = api.get("/options")
    assert "comment" in options["web_columns"]["value"] and options["store_streamed_bodies"]["value"] is True

    # the views are registered by name, and other content keeps mitmproxy's own views
    assert api.get(f"/flows/{plain['id']}/request/content/json.json")["view_name"] == "JSON"


def test_mitmweb_never_holds_credentials_in_flight_or_after(web) -> None:
    """Keys in headers and in the query string: redacted in the flow JSON while the call is in flight
    (the browser is sent it at once) and removed from the flow itself once it has gone upstream."""
    import threading

    proxy, api = web
    key = "sk-proj-WEBSECRETKEY-0001"
    client = proxy.client(api_key=key)
    slow = threading.Thread(
        target=lambda: client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "in flight"}],
            extra_headers={"x-test-hang-ms": "1500"},
            extra_query={"api-key": "WEBQUERYSECRET"},
        )  # fmt: skip
    )
    slow.start()
    deadline = time.monotonic() + 5
    in_flight: list[dict[str, Any]] = []
    while not in_flight and time.monotonic() < deadline:
        in_flight = [
            f
            for f in api.get("/flows")
            if f.get("request", {}).get("path", "").startswith("/v1/") and not f.get("response")
        ]
        time.sleep(0.05)
    assert in_flight, "the in-flight flow never showed"
    text = json.dumps(in_flight)
    assert "WEBSECRETKEY" not in text and "WEBQUERYSECRET" not in text
    assert "REDACTED" in text
    slow.join(10)
    (done,) = api.flows(1)
    text = json.dumps(done)
    assert "WEBSECRETKEY" not in text and "WEBQUERYSECRET" not in text
    headers = dict((k.lower(), v) for k, v in done["request"]["headers"])
    assert headers["authorization"].startswith("Bearer REDACTED:")


def test_a_shadowed_calls_comment_shows_its_verdict(make_proxy, tmp_path) -> None:
    cfg = tmp_path / "turnout.toml"
    cfg.write_text("[router]\nthreshold = 0.0\nnever_route_tasks = []\n\n[shadow]\nsample = 1.0\n")
    port = free_port()
    proxy = make_proxy(
        "--web", "--web-port", str(port), "--set", f"web_password={PASSWORD}", "--config", str(cfg), shadow=True
    )
    api = Web(port)
    proxy.client().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Classify: bad [[answer: negative]] [[cheap-answer: positive]]"}],
    )
    deadline = time.monotonic() + 15
    comment = ""
    while time.monotonic() < deadline and "shadow" not in comment:
        flows = [f for f in api.get("/flows") if f.get("request", {}).get("path", "").startswith("/v1/")]
        comment = next((f.get("comment") or "" for f in flows), "")
        time.sleep(0.1)
    assert "shadow gpt-4o-mini: fail (exact)" in comment, comment
