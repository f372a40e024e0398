"""turnout_warm_pool: provider connections stay warm across client connections (docs/connections.md)."""

from __future__ import annotations

import pytest
from latency_relay import LatencyRelay  # tests/latency_relay.py


@pytest.mark.parametrize("pool", [True, False])
def test_new_client_connections_reuse_one_provider_connection(make_proxy, upstream, pool):
    relay = LatencyRelay(("127.0.0.1", upstream.port), 0).start()  # counts the connections that reach it
    try:
        proxy = make_proxy(
            "--upstream", f"http://127.0.0.1:{relay.port}", "--set", f"turnout_warm_pool={str(pool).lower()}",
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
        assert relay.connections == (1 if pool else 4)
    finally:
        relay.stop()
