"""A turnout request hook that raises answers the flow (500 turnout_internal_error) instead of letting
the rest of the chain — Budget, Breakers, Forward's upstream redirect — be skipped."""

from __future__ import annotations

import asyncio
import inspect
import json

from mitmproxy import http
from mitmproxy.test import taddons, tflow

from turnout.addons import cache as cache_module
from turnout.addons.cache import Cache
from turnout.addons.forward import Forward
from turnout.addons.guard import fail_closed
from turnout.addons.intercept import Intercept
from turnout.addons.ledger_store import LedgerStore
from turnout.addons.record import Record
from turnout.addons.services import Services


def llm_request() -> http.HTTPFlow:
    f = tflow.tflow()
    body = json.dumps({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}).encode()
    f.request = http.Request.make(
        "POST", "https://api.openai.com/v1/chat/completions", body, {"authorization": "Bearer sk-x-1234567890"}
    )
    return f


def test_a_raising_hook_answers_500_and_nothing_is_forwarded(tmp_path, monkeypatch) -> None:
    services = Services()
    intercept, record, cache, forward = Intercept(services), Record(services), Cache(services), Forward(services)
    store = LedgerStore(services)
    with taddons.context(intercept, record, store, cache, forward) as tctx:
        tctx.configure(store, turnout_db=str(tmp_path / "ledger.db"))
        tctx.configure(cache, turnout_db=str(tmp_path / "ledger.db"))
        tctx.configure(forward, turnout_upstream="http://127.0.0.1:9")

        def broken(*args, **kwargs):
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(cache_module, "canonical_request", broken)
        f = llm_request()
        for addon in (intercept, cache, forward):
            result = addon.request(f)
            if inspect.isawaitable(result):
                asyncio.run(result)
        assert f.response is not None and f.response.status_code == 500
        err = json.loads(f.response.content)["error"]
        assert (
            err["type"] == "turnout_internal_error" and "Cache" in err["message"] and "RecursionError" in err["message"]
        )
        assert f.request.host == "api.openai.com" and f.request.port == 443  # Forward left it alone: never sent
        record.response(f)
        assert record.writer.flush(5)
        row = record.writer._db.execute("select status_code, blocked_by, error from flows").fetchone()
        assert row[0] == 500 and row[1] == "internal_error" and "turnout_internal_error" in row[2]
        record.done()
        store.done()


def test_async_hooks_are_guarded_too() -> None:
    class Boom:
        @fail_closed
        async def request(self, flow):
            raise ValueError("no")

    f = llm_request()
    asyncio.run(Boom().request(f))
    assert f.response.status_code == 500
