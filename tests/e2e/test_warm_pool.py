"""turnout_warm_pool: provider connections stay warm across client connections (docs/connections.md)."""

from __future__ import annotations

import pytest
from latency_relay import LatencyRelay  # tests/latency_relay.py


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
