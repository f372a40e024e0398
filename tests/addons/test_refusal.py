"""Intercept refuses (503) rather than forward traffic the ledger cannot record, or while draining at shutdown."""

from __future__ import annotations

import json
import time

from mitmproxy import http
from mitmproxy.test import taddons, tflow

from turnout.addons.intercept import Intercept
from turnout.addons.ledger_store import LedgerStore
from turnout.addons.record import Record
from turnout.addons.services import Services


def llm_request() -> http.HTTPFlow:
    f = tflow.tflow()
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    f.request = http.Request.make(
        "POST", "https://api.openai.com/v1/chat/completions", body, {"authorization": "Bearer sk-x-1234567890"}
    )
    return f


def test_refuses_when_the_ledger_cannot_take_rows_and_while_draining(tmp_path) -> None:
    services = Services()
    intercept, record, store = Intercept(services), Record(services), LedgerStore(services)
    with taddons.context(intercept, record, store) as tctx:
        tctx.configure(store, turnout_db=str(tmp_path / "ledger.db"))
        tctx.configure(intercept, turnout_hosts=["api.openai.com"])
        f = llm_request()
        intercept.request(f)
        assert f.response is None  # healthy: forwarded

        writer = record.writer
        size = writer._db.execute("pragma page_count").fetchone()[0]
        writer._db.execute(f"pragma max_page_count={size + 1}")  # a real SQLITE_FULL from here on
        writer.max_backlog = 3
        for i in range(5):
            writer.submit("flows", {"id": f"big{i}", "request_body": "x" * 20000})
        deadline = time.monotonic() + 5
        while writer.healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        f = llm_request()
        intercept.request(f)
        assert f.response is not None and f.response.status_code == 503
        assert json.loads(f.response.content)["error"]["code"] == "ledger_unavailable"
        assert "connection" not in f.response.headers  # not shutting down: the connection may stay

        writer._db.execute("pragma max_page_count=1073741823")
        assert writer.flush(timeout=10) and writer.healthy
        record.draining = True
        f = llm_request()
        intercept.request(f)
        assert f.response is not None and f.response.status_code == 503
        assert json.loads(f.response.content)["error"]["code"] == "shutting_down"
        assert f.response.headers["connection"] == "close"
        record.draining = False
        record.done()
        store.done()
