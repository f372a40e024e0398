"""`turnout proxy --metrics-port P`: a Prometheus scrape after real calls shows requests, tokens, cost and latency."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from conftest import free_port


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/plain")
        return resp.read().decode()


def value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_endpoint_counts_calls(make_proxy) -> None:
    port = free_port()
    proxy = make_proxy("--metrics-port", str(port))
    assert any(f"turnout: metrics on http://127.0.0.1:{port}/metrics" in line for line in proxy.output)
    client = proxy.client()
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "count me please"}])
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    list(stream)
    import openai

    try:
        client.with_options(max_retries=0).chat.completions.create(
            model="error-500", messages=[{"role": "user", "content": "fail"}]
        )
    except openai.InternalServerError:
        pass
    proxy.wait_rows(4)

    deadline = time.monotonic() + 10
    while True:
        text = scrape(port)
        if value(text, "turnout_requests_total", model="error-500") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    labels = {"model": "gpt-4o", "provider": "openai", "feature": ""}
    assert value(text, "turnout_requests_total", **labels) == 2
    assert value(text, "turnout_tokens_total", kind="prompt", **labels) > 0
    assert value(text, "turnout_tokens_total", kind="completion", **labels) > 0
    assert value(text, "turnout_cost_usd_total", **labels) > 0
    assert value(text, "turnout_latency_seconds_count", **labels) == 2
    assert value(text, "turnout_latency_seconds_bucket", le="+Inf", **labels) == 2
    assert value(text, "turnout_ttft_seconds_count", model="gpt-4o-mini") == 1  # the stream
    assert value(text, "turnout_errors_total", model="error-500") == 1
    assert value(text, "turnout_ledger_up") == 1 and value(text, "turnout_ledger_rejected_rows") == 0
    assert value(text, "turnout_ledger_backlog_rows") is not None
    # the counters agree with the ledger (the second identical call is a cache hit with the default config)
    rows = proxy.rows("requested_model = 'gpt-4o'")
    assert len(rows) == 2
    assert value(text, "turnout_cost_usd_total", **labels) == pytest.approx(sum(r["cost_usd"] or 0 for r in rows))
    hits = [r for r in rows if r["cache"] == "hit"]
    assert (value(text, "turnout_cache_hits_total", **labels) or 0) == len(hits)
    if hits:
        assert value(text, "turnout_cache_saved_usd_total", **labels) == pytest.approx(
            sum(r["saved_usd"] for r in hits)
        )
