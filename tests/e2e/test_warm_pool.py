"""turnout_warm_pool: provider connections stay warm across client connections (docs/connections.md)."""

from __future__ import annotations

import pytest
from conftest import free_port
from latency_relay import LatencyRelay  # tests/latency_relay.py


async def _timed_stream(client, content: str, headers: dict[str, str]) -> tuple[float, float, str]:
    """One streamed call on its own client: (first content, end, text), monotonic clock; the client closed."""
    import time

    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": content}], stream=True, extra_headers=headers
    )
    first, text = None, ""
    async for c in stream:
        if c.choices and c.choices[0].delta.content:
            first = first or time.monotonic()
            text += c.choices[0].delta.content
    end = time.monotonic()
    await client.close()
    return first or end, end, text


@pytest.mark.parametrize("pool", ["new-connections", "all", "off"])
def test_new_client_connections_reuse_one_provider_connection(make_proxy, upstream, pool):
    relay = LatencyRelay(("127.0.0.1", upstream.port), 0).start()  # counts the connections that reach it
    try:
        proxy = make_proxy(
            "--upstream", f"http://127.0.0.1:{relay.port}", "--set", f"turnout_warm_pool={pool}",
            with_upstream=False,
        )  # fmt: skip
        for i in range(4):
            client = proxy.client(max_retries=0)  # a new client: a new connection to the proxy
            stream = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"warm {i}"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == f"echo from gpt-4o: warm {i}"
            client.close()
        rows = proxy.wait_rows(4)
        assert all(r["error"] is None and r["completion_tokens"] for r in rows)
        assert relay.connections == (4 if pool == "off" else 1)
    finally:
        relay.stop()


@pytest.mark.parametrize("pool,connections", [("new-connections", 2), ("all", 1), ("off", 1)])
def test_a_kept_alive_client_gets_a_provider_connection_of_its_own(make_proxy, upstream, pool, connections):
    """By default the pool carries a client connection's first call only: the next opens the client
    connection's own provider connection (mitmproxy's, no hop), which serves every call after it."""
    relay = LatencyRelay(("127.0.0.1", upstream.port), 0).start()
    try:
        proxy = make_proxy(
            "--upstream", f"http://127.0.0.1:{relay.port}", "--set", f"turnout_warm_pool={pool}",
            with_upstream=False,
        )  # fmt: skip
        client = proxy.client(max_retries=0)
        for i in range(5):
            r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"kept {i}"}])
            assert r.choices[0].message.content == f"echo from gpt-4o: kept {i}"
        client.close()
        assert len(proxy.wait_rows(5)) == 5
        assert relay.connections == connections
    finally:
        relay.stop()


def test_64_concurrent_streams_hold_the_bound_and_none_waits_for_another(make_proxy, upstream):
    """The pool holds at most turnout_warm_pool_size connections; a call that finds them all busy goes on
    its own client connection instead of queueing behind another client's stream."""
    import asyncio
    import threading
    import time

    bound, n = 8, 64
    relay = LatencyRelay(("127.0.0.1", upstream.port), 0).start()  # counts the connections that reach it
    metrics_port = free_port()
    peak, sampling = [0], threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], int(_metric(metrics_port, "turnout_warm_pool_in_use")))
            except OSError:
                pass
            time.sleep(0.05)

    try:
        proxy = make_proxy(
            "--upstream", f"http://127.0.0.1:{relay.port}", "--set", f"turnout_warm_pool_size={bound}",
            "--metrics-port", str(metrics_port), with_upstream=False,
        )  # fmt: skip
        # each stream 20 chunks 250 ms apart (5 s, room for a slow machine to open 64 connections first);
        # every client connection is new, so each first call would go to the pool: only `bound` can
        headers = {"x-test-chunks": "20", "x-test-delay-ms": "250", "x-turnout-cache": "no"}

        async def one(i: int) -> tuple[float, float, str]:
            return await _timed_stream(proxy.async_client(max_retries=0, timeout=60), f"pool {i} " + "w " * 19, headers)

        async def burst() -> list[tuple[float, float, str]]:
            return await asyncio.gather(*(one(i) for i in range(n)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results = asyncio.run(burst())
        sampling.set()
        sampler.join(5)
        assert all(text.startswith("echo from gpt-4o: pool") for *_, text in results)
        # no stream waited for another to end: every one had begun before the first one finished
        assert max(first for first, _, _ in results) < min(end for _, end, _ in results)
        overflow = int(_metric(metrics_port, "turnout_warm_pool_overflow_total"))
        assert peak[0] == bound  # the pool was full, and never past its bound
        assert overflow >= n - 2 * bound  # the rest went on their own connections (some may find a freed slot)
        assert relay.connections <= bound + overflow  # the pool opened no more than its bound
        rows = proxy.wait_rows(n, timeout=30)
        assert all(r["error"] is None and r["completion_tokens"] for r in rows)
    finally:
        relay.stop()


def _metric(port: int, name: str, labels: str = "") -> float:
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("http2", [True, False])
def test_concurrent_new_connections_share_one_http2_provider_connection(make_proxy, upstream, tmp_path, http2):
    """A provider offering h2: a burst of new client connections rides one pooled connection, streams
    interleaved on it, each client getting its own answer; with HTTP/2 off, HTTP/1.1, one call each."""
    import asyncio

    from h2_front import H2Front  # tests/h2_front.py

    front = H2Front(upstream.port, tmp_path / "h2").start()
    metrics = free_port()
    n = 8
    try:
        proxy = make_proxy(
            "--upstream", f"https://localhost:{front.port}", "--set", f"ssl_verify_upstream_trusted_ca={front.cert}",
            "--set", f"turnout_warm_pool_http2={'true' if http2 else 'false'}", "--metrics-port", str(metrics),
            with_upstream=False,
        )  # fmt: skip
        warm = proxy.client(max_retries=0)  # one call first: the pool's connection is open and warm
        assert warm.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "warm"}])
        warm.close()

        async def one(i: int) -> tuple[float, float, str]:
            client = proxy.async_client(api_key=f"sk-tenant-{i:04d}", max_retries=0, timeout=60)
            headers = {"x-test-chunks": "6", "x-test-delay-ms": "300", "x-turnout-cache": "no"}
            return await _timed_stream(client, f"h2 call {i}", headers)

        async def burst() -> list[tuple[float, float, str]]:
            return await asyncio.gather(*(one(i) for i in range(n)))

        results = asyncio.run(burst())
        for i, (_, _, text) in enumerate(results):
            assert text == f"echo from gpt-4o: h2 call {i}"  # no answer crossed to another client
        assert max(first for first, _, _ in results) < min(end for _, end, _ in results)  # none waited
        rows = proxy.wait_rows(n + 1)
        assert all(r["error"] is None and r["completion_tokens"] for r in rows)
        versions = {r["http_version"] for r in front.requests}
        if http2:
            assert versions == {"2"}
            assert len(front.connections) == 1  # the warm one: the burst opened no other
            assert _metric(metrics, "turnout_warm_pool_responses_total", '{http_version="HTTP/2"}') == n + 1
        else:
            assert versions == {"1.1"}
            assert len(front.connections) >= n  # one call per HTTP/1.1 connection at a time
            assert _metric(metrics, "turnout_warm_pool_responses_total", '{http_version="HTTP/1.1"}') == n + 1
    finally:
        front.stop()


@pytest.mark.parametrize("http2", [False, True])
def test_a_cookie_one_tenant_was_given_never_rides_another_tenants_call(make_proxy, upstream, tmp_path, http2):
    """Provider edges set cookies (Cloudflare's __cf_bm); the relay's pool is shared, its cookie jar must not be."""
    from h2_front import H2Front

    front = H2Front(upstream.port, tmp_path / "h2").start()
    try:
        proxy = make_proxy(
            "--upstream", f"https://localhost:{front.port}", "--set", f"ssl_verify_upstream_trusted_ca={front.cert}",
            "--set", f"turnout_warm_pool_http2={'true' if http2 else 'false'}", with_upstream=False,
        )  # fmt: skip
        for i, key in enumerate(["sk-tenant-a-0001", "sk-tenant-b-0002", "sk-tenant-a-0001"]):
            client = proxy.client(api_key=key, max_retries=0)  # a new connection each: the pool carries all three
            r = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"cookie {i}"}],
                extra_headers={"x-test-set-cookie": f"__cf_bm=tenant{i}; Path=/; Secure; HttpOnly"},
            )  # fmt: skip
            assert r.headers.get("set-cookie", "").startswith(f"__cf_bm=tenant{i}")  # the client gets it, as sent
            client.close()
        assert len(proxy.wait_rows(3)) == 3
        assert len(front.requests) == 3
        for req in front.requests:
            assert not any(k.lower() == "cookie" for k, _ in req["headers"]), req["headers"]
            agents = [v for k, v in req["headers"] if k.lower() == "user-agent"]
            assert len(agents) == 1 and agents[0].startswith("OpenAI/Python")  # the SDK's; the relay adds none
        assert {r["http_version"] for r in front.requests} == ({"2"} if http2 else {"1.1"})
    finally:
        front.stop()
