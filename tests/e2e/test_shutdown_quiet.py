"""SIGTERM with many streams open is an expected shutdown: every flow recorded, no traceback printed."""

from __future__ import annotations

import threading
import time


def test_sigterm_with_open_streams_records_all_and_prints_no_traceback(make_proxy):
    proxy = make_proxy("--set", "turnout_drain=1", "--set", "turnout_cache=false")
    client = proxy.client(max_retries=0)

    def stream(i: int) -> None:
        try:
            for _ in client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"long {i} " * 20}], stream=True,
                extra_headers={"x-test-chunks": "20", "x-test-delay-ms": "500"},
            ):  # fmt: skip
                pass
        except Exception:  # noqa: BLE001 - the proxy goes away mid-stream: expected here
            pass

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    time.sleep(2)
    assert proxy.stop() == 0
    for t in threads:
        t.join(10)
    out = "".join(proxy.output)
    assert "Traceback" not in out and "CancelledError" not in out, out[-2000:]
    rows = proxy.rows()
    assert len(rows) == 40 and all(r["error"] for r in rows)  # each one recorded as cut by the shutdown


def test_sigterm_with_idle_keep_alive_connections_prints_no_traceback(make_proxy):
    proxy = make_proxy()
    client = proxy.client()
    for i in range(3):  # the SDK keeps its connection open afterwards
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"idle {i}"}])
    assert proxy.stop() == 0
    out = "".join(proxy.output)
    assert "Traceback" not in out and "CancelledError" not in out, out[-2000:]
