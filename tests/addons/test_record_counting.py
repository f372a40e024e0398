"""Record counts a stream the provider reported no usage for off the event loop — without holding up
the client, losing the row, or letting a shutdown mislabel it."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from turnout.addons import record as record_module
from turnout.addons import state
from turnout.addons.intercept import Intercept
from turnout.addons.ledger_store import LedgerStore
from turnout.addons.record import Record
from turnout.addons.services import Services
from turnout.ledger.request_size import prompt_tokens
from turnout.router.tokens import count_tokens

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me about proxies."}], "stream": True}


def chunk(content: str) -> bytes:
    data = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": content}}],
    }
    return f"data: {json.dumps(data)}\n\n".encode()


# the end of a stream from a server that sends no usage chunk
END = b'data: {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


def streamed_flow(intercept: Intercept, record: Record, *chunks: bytes) -> http.HTTPFlow:
    """A chat stream through the hooks as far as its response headers and `chunks` (no usage chunk)."""
    f = tflow.tflow()
    f.request = http.Request.make("POST", "https://api.openai.com/v1/chat/completions", json.dumps(BODY).encode(),
                                  {"authorization": "Bearer sk-count-000000000001", "content-type": "application/json"})  # fmt: skip
    intercept.request(f)
    record.request(f)
    f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    record.responseheaders(f)
    for c in chunks:
        f.response.stream(c)  # type: ignore[operator]
    return f


def rows(record: Record, db) -> list[dict]:
    assert record.writer is not None and record.writer.flush(timeout=10)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("select * from flows")]
    finally:
        conn.close()


@pytest.fixture
def addons(tmp_path):
    services = Services()
    intercept, record, store = Intercept(services), Record(services), LedgerStore(services)
    with taddons.context(intercept, record, store) as tctx:
        tctx.configure(store, turnout_db=str(tmp_path / "ledger.db"))
        tctx.configure(intercept, turnout_hosts=["api.openai.com"])
        yield intercept, record, tmp_path / "ledger.db"
        record.done()
        store.done()


def test_the_hook_returns_at_once_and_the_row_follows_with_the_count(addons):
    intercept, record, db = addons

    async def main() -> None:
        f = streamed_flow(intercept, record, chunk("Proxies relay"), chunk(" requests."), END)
        llm = state.get(f)
        record.response(f)  # mitmproxy sends the stream's end only after this returns: it must not wait
        assert f.id in record.counting and not llm.recording.recorded
        await asyncio.gather(*record._tasks)
        assert llm.recording.recorded and f.id not in record.counting

    asyncio.run(main())
    (row,) = rows(record, db)
    assert row["error"] is None and row["usage_estimated"] == 1
    assert row["prompt_tokens"] == prompt_tokens(BODY)
    assert row["completion_tokens"] == count_tokens("Proxies relay requests.", "gpt-4o")


def test_a_shutdown_while_counting_keeps_the_flows_own_outcome(addons):
    intercept, record, db = addons

    async def main() -> None:
        f = streamed_flow(intercept, record, chunk("Done already."), END)
        record.response(f)
        record._close()  # the drain ended (or turnout_drain=0) before the worker thread did
        await asyncio.gather(*record._tasks)  # ...which then records nothing a second time

    asyncio.run(main())
    (row,) = rows(record, db)
    assert row["error"] is None  # finished, not "turnout shut down before the flow finished"
    assert row["usage_estimated"] == 1 and row["completion_tokens"] == count_tokens("Done already.", "gpt-4o")


def test_a_failing_count_costs_the_count_not_the_row(addons, monkeypatch):
    intercept, record, db = addons

    def broken(*args):
        raise RecursionError("a body nested too deep")

    monkeypatch.setattr(record_module, "unreported_usage", broken)

    async def main() -> None:
        f = streamed_flow(intercept, record, chunk("Hello"), END)
        record.response(f)
        await asyncio.gather(*record._tasks)

    asyncio.run(main())
    (row,) = rows(record, db)
    assert row["error"] is None and row["prompt_tokens"] is None and row["usage_estimated"] is None
    assert record.open_flows == {}


def test_a_stream_cut_before_its_first_event_still_bills_the_prompt(addons):
    intercept, record, db = addons

    async def main() -> None:
        f = streamed_flow(intercept, record)  # headers came, then the client hung up
        f.error = tflow.terr("client disconnected")
        record.error(f)
        await asyncio.gather(*record._tasks)

    asyncio.run(main())
    (row,) = rows(record, db)
    assert row["error"].startswith("stream incomplete")
    assert row["usage_estimated"] == 1 and row["prompt_tokens"] == prompt_tokens(BODY) and row["completion_tokens"] == 0
