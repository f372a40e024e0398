"""Google Gemini through a real proxy, intercepted by default: the google-genai SDK configured only by
`turnout env`, raw HTTP for what the SDK does not send (the `?key=` parameter, the JSON-array stream),
and the OpenAI SDK on Gemini's OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import ssl
import time

import httpx
import openai
import pytest
from google.genai import errors, types

FLASH = "gemini-2.5-flash"
KEY = "AIzaSyTESTSECRETgemini-0001"
BASE = "https://generativelanguage.googleapis.com"


@pytest.fixture
def proxy(make_proxy):
    return make_proxy()  # no turnout_hosts: Gemini is intercepted by default


def _raw(proxy) -> httpx.Client:
    return httpx.Client(proxy=proxy.env["HTTPS_PROXY"], verify=_trust(proxy), timeout=30)


def _trust(proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=proxy.env["SSL_CERT_FILE"])


def test_generate_is_recorded_priced_and_keeps_no_key(proxy, upstream):
    client = proxy.gemini_client(api_key=KEY)
    r = client.models.generate_content(
        model=FLASH,
        contents="hello gemini",
        config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0),
    )
    assert r.text == f"echo from {FLASH}: hello gemini"
    (row,) = proxy.wait_rows(1)
    assert (row["provider"], row["endpoint"], row["host"]) == (
        "gemini",
        "generate",
        "generativelanguage.googleapis.com",
    )
    assert row["requested_model"] == row["response_model"] == FLASH and row["finish_reason"] == "STOP"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 5)
    assert row["cost_usd"] == pytest.approx((2 * 0.30 + 5 * 2.50) / 1e6)  # genai-prices' gemini-2.5-flash
    assert row["api_key_fp"] and KEY not in json.dumps(row) and KEY.encode() not in proxy.db.read_bytes()
    sent = {k.lower(): v for k, v in upstream.requests[-1]["headers"].items()}
    assert sent["x-goog-api-key"] == KEY  # the provider still gets it


def test_key_in_the_query_never_reaches_the_ledger_or_the_log(proxy, upstream):
    body = {"contents": [{"role": "user", "parts": [{"text": "query key"}]}]}
    with _raw(proxy) as c:
        r = c.post(f"{BASE}/v1beta/models/{FLASH}:generateContent?key={KEY}", json=body)
    assert r.status_code == 200 and r.json()["candidates"][0]["content"]["parts"][0]["text"].endswith("query key")
    assert upstream.requests[-1]["path"].endswith(f"?key={KEY}")
    (row,) = proxy.wait_rows(1)
    assert row["path"] == f"/v1beta/models/{FLASH}:generateContent?key=REDACTED" and row["api_key_fp"]
    proxy.stop()
    assert KEY.encode() not in proxy.db.read_bytes() and KEY not in "".join(proxy.output)


def test_sse_stream_tool_call_and_cache_hit(proxy, upstream):
    client = proxy.gemini_client()
    chunks = [c.text for c in client.models.generate_content_stream(model=FLASH, contents="stream me please")]
    assert len(chunks) > 1 and "".join(chunks) == f"echo from {FLASH}: stream me please"
    again = [c.text for c in client.models.generate_content_stream(model=FLASH, contents="stream me please")]
    assert "".join(again) == "".join(chunks)  # a hit, rebuilt as Gemini's SSE stream
    whole = client.models.generate_content(model=FLASH, contents="stream me please")
    assert whole.text == "".join(chunks)  # the streamed answer serves the non-streamed question too
    weather = types.FunctionDeclaration(
        name="get_weather", description="w", parameters={"type": "object", "properties": {"city": {"type": "string"}}}
    )
    tool = client.models.generate_content(
        model=FLASH,
        contents="weather in Paris?",
        config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[weather])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            thinking_config=types.ThinkingConfig(thinking_budget=64),
        ),
    )
    assert tool.function_calls[0].name == "get_weather" and tool.function_calls[0].args == {
        "city": "Paris",
        "unit": "c",
    }
    rows = proxy.wait_rows(4)
    assert [(r["endpoint"], r["cache"]) for r in rows] == [
        ("stream", "miss"), ("stream", "hit"), ("generate", "hit"), ("generate", "miss")
    ]  # fmt: skip
    # running usage on every chunk: the last counts, never the sum
    words = len("".join(chunks).split())  # the test server counts a word a token
    assert rows[0]["stream"] == 1 and rows[0]["completion_tokens"] == words and rows[0]["error"] is None
    assert rows[1]["cost_usd"] == 0 and rows[1]["saved_usd"] == pytest.approx(rows[0]["cost_usd"])
    # thinking tokens are billed as output
    said = len(f"echo from {FLASH}: weather in Paris?".split())
    assert rows[3]["completion_tokens"] == said + 3 and rows[3]["reasoning_tokens"] == 3
    call = json.loads(rows[3]["response_body"])["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call == {"name": "get_weather", "args": {"city": "Paris", "unit": "c"}}
    assert sum(1 for r in upstream.requests if "stream me please" in str(r["body"])) == 1


def test_json_array_stream_is_teed_unbuffered(proxy, upstream):
    body = {"contents": [{"role": "user", "parts": [{"text": "one two three four five six seven eight"}]}]}
    headers = {"x-goog-api-key": KEY, "x-test-delay-ms": "400", "x-test-chunks": "6"}
    arrivals = []
    with _raw(proxy) as c, c.stream("POST", f"{BASE}/v1beta/models/{FLASH}:streamGenerateContent", json=body,
                                    headers=headers) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        raw = b""
        for data in r.iter_raw():
            arrivals.append(time.monotonic())
            raw += data
    elements = json.loads(raw)
    assert len(elements) == 6 and elements[-1]["candidates"][0]["finishReason"] == "STOP"
    # sent over 2 s: a buffering proxy delivers them in one burst; half the spread leaves room for a slow machine
    assert arrivals[-1] - arrivals[0] > 1.0, "the elements came all at the end, not as they were sent"
    (row,) = proxy.wait_rows(1)
    assert (row["endpoint"], row["stream"], row["error"]) == ("stream_json", 1, None)
    assert row["completion_tokens"] == elements[-1]["usageMetadata"]["candidatesTokenCount"]
    text = "".join(p["text"] for e in elements for p in e["candidates"][0]["content"]["parts"])
    assert json.loads(row["response_body"])["candidates"][0]["content"]["parts"][0]["text"] == text
    # a hit answers in the same framing
    with _raw(proxy) as c:
        hit = c.post(f"{BASE}/v1beta/models/{FLASH}:streamGenerateContent", json=body, headers={"x-goog-api-key": KEY})
    assert "".join(p["text"] for e in hit.json() for p in e["candidates"][0]["content"]["parts"]) == text


def test_count_tokens_passes_through_and_embeddings_are_recorded(proxy):
    client = proxy.gemini_client()
    assert client.models.count_tokens(model=FLASH, contents="count these words").total_tokens == 3
    emb = client.models.embed_content(model="gemini-embedding-001", contents="embed me")
    assert emb.embeddings[0].values == [0.1, 0.2, 0.3]
    rows = proxy.wait_rows(2)
    assert [r["endpoint"] for r in rows] == [None, "batch_embed"]  # the SDK batches a single embedding too
    assert rows[0]["path"].endswith(":countTokens") and rows[0]["cost_usd"] in (None, 0)


def test_errors_keep_googles_shape(proxy):
    client = proxy.gemini_client()
    with pytest.raises(errors.ServerError) as exc:
        client.models.generate_content(model="error-503", contents="x")
    assert exc.value.code == 503 and exc.value.status == "UNAVAILABLE"
    (row,) = proxy.wait_rows(1)
    assert row["status_code"] == 503 and "UNAVAILABLE" in row["error"]


def test_budget_refusal_reaches_the_sdk_in_googles_shape(make_proxy, tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[budgets]]\nname = "g"\nscope = "model"\nwindow = "day"\nrequests = 1\n')
    proxy = make_proxy("--config", str(cfg))
    client = proxy.gemini_client()
    client.models.generate_content(model=FLASH, contents="first")
    with pytest.raises(errors.APIError) as exc:
        client.models.generate_content(model=FLASH, contents="second")
    assert exc.value.code == 429 and "budget" in (exc.value.message or "")
    assert [r["status_code"] for r in proxy.wait_rows(2)] == [200, 429]


def test_routed_on_the_path(make_proxy, tmp_path, upstream):
    cfg = tmp_path / "t.toml"
    cfg.write_text("[router]\nthreshold = 0.0\n")  # every eligible request routes: the ladder decides
    proxy = make_proxy("--mode", "route", "--config", str(cfg))
    client = proxy.gemini_client()  # held: a client nobody references closes its connections
    r = client.models.generate_content(model="gemini-2.5-pro", contents="What is the capital of France?")
    assert r.text.startswith("echo from gemini-2.5-flash:")
    assert upstream.requests[-1]["path"].endswith("/models/gemini-2.5-flash:generateContent")
    (row,) = proxy.wait_rows(1)
    assert (row["requested_model"], row["model"], row["routed"]) == ("gemini-2.5-pro", "gemini-2.5-flash", 1)
    assert row["baseline_cost_usd"] > row["cost_usd"] > 0


def test_openai_compatible_endpoint_counts_usage_once(proxy):
    client = openai.OpenAI(
        base_url=f"{BASE}/v1beta/openai/",
        api_key=KEY,
        http_client=httpx.Client(proxy=proxy.env["HTTPS_PROXY"], verify=_trust(proxy)),
        max_retries=0,
    )
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=FLASH, messages=[{"role": "user", "content": "compat stream"}], stream=True
        )
        if c.choices
    )
    assert text == f"echo from {FLASH}: compat stream"
    (row,) = proxy.wait_rows(1)
    assert (row["provider"], row["endpoint"], row["requested_model"]) == ("gemini", "chat", FLASH)
    assert row["completion_tokens"] == 5 and row["cost_usd"] == pytest.approx((2 * 0.30 + 5 * 2.50) / 1e6)
