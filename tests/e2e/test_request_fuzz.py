"""A property of the request path, through a real proxy: whatever a client sends to a provider host —
arbitrary JSON, strings with lone surrogates and control bytes, deep nesting, bytes that are not
JSON at all — the proxy answers, the ledger gets a row, and nothing goes anywhere but the upstream."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawclient import https

texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # surrogates and controls included
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=False) | texts
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=30
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]), "content": json_values}
)
chat_bodies = st.fixed_dictionaries(
    {"model": texts | st.sampled_from(["gpt-4o", "gpt-4o-mini"]), "messages": st.lists(message, max_size=3)},
    optional={
        "temperature": scalars,
        "user": json_values,
        "tools": json_values,
        "stream": st.booleans(),
        "metadata": json_values,
    },
)
nested = st.integers(min_value=1, max_value=3000).map(
    lambda n: b'{"model": "gpt-4o", "messages": ' + b"[" * n + b"]" * n + b"}"
)


def encode(value) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()  # ASCII escapes: lone surrogates travel as \udXXX


payloads = (chat_bodies | json_values).map(encode) | nested | st.binary(max_size=200)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    payload=payloads, team=st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b)
)
def test_any_request_is_answered_recorded_and_kept_to_the_upstream(fuzz_proxy, upstream, payload, team):
    proxy, sent, before = fuzz_proxy
    r = https(
        proxy.port, proxy.env["SSL_CERT_FILE"], "POST", "/v1/chat/completions?api-key=fuzz-secret",
        headers=[("authorization", "Bearer sk-test-key-0001"), ("content-type", "application/json"), ("x-turnout-team", team.strip())],
        body=payload,
    )  # fmt: skip
    sent.append(payload)
    assert 200 <= r.status < 600
    # never mitmproxy's page, never a dial to another host (which would fail here: there is no network)
    assert b"Cannot connect" not in r.body and b"<html>" not in r.body and b"turnout_upstream" not in r.body
    rows = proxy.wait_rows(len(sent), timeout=20)
    assert len(rows) == len(sent), f"{len(sent) - len(rows)} row(s) missing"
    assert all(req["path"].startswith("/v1/") for req in upstream.requests[before:])


@pytest.fixture
def fuzz_proxy(make_proxy, upstream):
    # the upstream is shared by the session: only what reaches it from here on is this test's
    return make_proxy("--set", "turnout_cache=false"), [], len(upstream.requests)
