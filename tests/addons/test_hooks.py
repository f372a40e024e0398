"""The request addons at hook level: the real chain (Intercept → Attribute → Cache → Breakers → Budget
→ Forward, then Record and LedgerStore) on mitmproxy's test flows, with an injected clock instead of
sleeping. The end-to-end tests cover the same behaviour through a real `turnout proxy`."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.log import LegacyLogEvents
from mitmproxy.test import taddons, tflow

from turnout.addons.attribute import Attribute
from turnout.addons.breakers import Breakers
from turnout.addons.budget import Budget
from turnout.addons.cache import Cache
from turnout.addons.forward import Forward
from turnout.addons.intercept import Intercept
from turnout.addons.ledger_store import LedgerStore
from turnout.addons.prices import Prices
from turnout.addons.record import Record
from turnout.addons.services import Services
from turnout.ledger.store import open_ledger

KEY = "Bearer sk-hooks-0000000000000001"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def answer(text: str = "hello") -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}  # fmt: skip


@dataclass
class Chain:
    clock: Clock
    services: Services
    request_addons: list[Any]
    record: Record
    db: Path
    upstream_calls: int = 0

    def call(self, content: str = "hi", *, headers: dict[str, str] | None = None, **body: Any) -> http.HTTPFlow:
        """One chat call through the request hooks; the 'provider' answers whatever reaches it."""
        payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **body}
        f = tflow.tflow()
        f.request = http.Request.make(
            "POST", "https://api.openai.com/v1/chat/completions", json.dumps(payload).encode(),
            {"authorization": KEY, "content-type": "application/json", **(headers or {})},
        )  # fmt: skip

        async def run() -> None:
            for addon in self.request_addons:
                result = addon.request(f)
                if inspect.isawaitable(result):
                    await result
            self.record.request(f)
            if f.response is None:  # forwarded: the provider answers
                self.upstream_calls += 1
                f.response = http.Response.make(
                    200, json.dumps(answer(content)).encode(), {"content-type": "application/json"}
                )
            self.record.responseheaders(f)
            self.record.response(f)

        asyncio.run(run())
        return f

    def rows(self) -> list[dict[str, Any]]:
        assert self.services.writer is not None and self.services.writer.flush(10)
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("select * from flows order by rowid")]
        finally:
            conn.close()


@contextmanager
def chain(tmp_path: Path, config: str = "", **options: Any) -> Iterator[Chain]:
    clock, services = Clock(), Services()
    intercept, attribute = Intercept(services), Attribute()
    cache, breakers, budget = Cache(services, clock), Breakers(services, clock), Budget(services, clock)
    forward, record, store = Forward(services), Record(services), LedgerStore(services)
    addons = [Prices(services), intercept, attribute, cache, breakers, budget, forward, record, store]
    cfg = tmp_path / "turnout.toml"
    cfg.write_text(config)
    db = tmp_path / "ledger.db"
    with taddons.context(*addons) as tctx:
        settings = {"turnout_db": str(db), "turnout_config": str(cfg), **options}
        tctx.options.update(**settings)
        for addon in addons:  # as mitmproxy does when options change: every addon, in chain order
            addon.configure(set(settings))
        yield Chain(clock, services, [intercept, attribute, cache, breakers, budget, forward], record, db)
        record.done()
        cache.done()
        store.done()
        master = tctx.master
    for handler in logging.getLogger().handlers[:]:  # taddons leaves its master's log handler behind
        if isinstance(handler, LegacyLogEvents) and handler.master is master:
            logging.getLogger().removeHandler(handler)


def error_of(f: http.HTTPFlow) -> dict[str, Any]:
    assert f.response is not None
    return json.loads(f.response.content)["error"]


# -- Cache ---------------------------------------------------------------------------------------


def test_cache_miss_then_hit_then_expiry_by_the_clock(tmp_path):
    with chain(tmp_path, turnout_cache_ttl=60) as c:
        first = c.call("cache me", temperature=0)
        assert first.response.headers["x-turnout-cache"] == "miss"
        hit = c.call("cache me", temperature=0)
        assert hit.response.headers["x-turnout-cache"] == "hit" and c.upstream_calls == 1
        assert json.loads(hit.response.content)["choices"][0]["message"]["content"] == "cache me"
        c.clock.advance(61)  # past the ttl: the entry is stale
        assert c.call("cache me", temperature=0).response.headers["x-turnout-cache"] == "miss"
        assert c.upstream_calls == 2
        assert [r["cache"] for r in c.rows()] == ["miss", "hit", "miss"]


def test_cache_bypass_skip_and_tenant_scope(tmp_path):
    with chain(tmp_path) as c:
        c.call("scoped", temperature=0)
        bypass = c.call("scoped", temperature=0, headers={"cache-control": "no-cache"})
        assert bypass.response.headers["x-turnout-cache"] == "bypass"
        other_key = c.call("scoped", temperature=0, headers={"authorization": "Bearer sk-hooks-other-tenant-02"})
        assert other_key.response.headers["x-turnout-cache"] == "miss"  # another key never gets this answer
        assert c.upstream_calls == 3
        assert [r["cache"] for r in c.rows()] == ["miss", "bypass", "miss"]


def test_sampled_calls_are_skipped_when_only_deterministic_ones_are_cached(tmp_path):
    with chain(tmp_path, turnout_cache_nondeterministic=False) as c:
        c.call("sampled", temperature=0.7)
        c.call("sampled", temperature=0.7)
        assert c.upstream_calls == 2 and [r["cache"] for r in c.rows()] == ["skip", "skip"]


def test_replay_miss_is_a_clear_400_and_never_forwarded(tmp_path):
    recording = tmp_path / "recorded.db"
    open_ledger(recording).conn.close()  # an empty recording
    with chain(tmp_path, turnout_replay=str(recording)) as c:
        f = c.call("never recorded", temperature=0)
        assert f.response.status_code == 400 and error_of(f)["type"] == "turnout_replay_miss"
        assert c.upstream_calls == 0
        assert c.rows()[0]["cache"] == "replay-miss"


# -- Budget --------------------------------------------------------------------------------------

BUDGET = """
[[budgets]]
name = "tiny"
window = "minute"
requests = 2
alert_at = 0.5
"""


def test_budget_alerts_blocks_and_resets_with_its_window(tmp_path):
    with chain(tmp_path, BUDGET) as c:
        c.clock.t = 1_800_000_000.0 - 1_800_000_000.0 % 60 + 5  # 5 s into a minute
        assert "x-turnout-budget" not in c.call("one").response.headers
        assert c.call("two").response.headers["x-turnout-budget"] == "tiny=50%; state=alert"  # spent before it: 1 of 2
        blocked = c.call("three")
        assert blocked.response.status_code == 429 and error_of(blocked)["code"] == "budget_exceeded"
        assert c.upstream_calls == 2
        c.clock.advance(60)  # the next calendar minute
        assert c.call("four").response.status_code == 200 and c.upstream_calls == 3
        rows = c.rows()
        assert [r["blocked_by"] for r in rows] == [None, None, "budget:tiny", None]
        assert rows[1]["budget_alerts"] == "tiny:50%"


def test_budget_throttle_admits_its_rate_and_says_when_to_retry(tmp_path):
    config = '[[budgets]]\nname = "slow"\nwindow = "day"\nrequests = 100\nthrottle_at = 0.0\nthrottle_rpm = 2\n'
    with chain(tmp_path, config) as c:
        c.call("a")
        c.clock.advance(10)
        c.call("b")
        c.clock.advance(10)
        throttled = c.call("c")
        assert throttled.response.status_code == 429 and error_of(throttled)["code"] == "budget_throttled"
        assert float(throttled.response.headers["retry-after"]) == pytest.approx(40, abs=1)
        c.clock.advance(41)  # the first admission has left the minute
        assert c.call("d").response.status_code == 200


# -- Breakers ------------------------------------------------------------------------------------


def test_loop_breaker_trips_and_calms_down_with_the_clock(tmp_path):
    config = '[breakers]\nloop_threshold = 2\nloop_window = "30s"\n'
    with chain(tmp_path, config, turnout_cache=False) as c:  # a retry loop the cache would otherwise answer
        for _ in range(2):
            assert c.call("again", temperature=1).response.status_code == 200
        looped = c.call("again", temperature=1)
        assert looped.response.status_code == 429 and error_of(looped)["code"] == "loop_detected"
        c.clock.advance(31)
        assert c.call("again", temperature=1).response.status_code == 200
        assert [r["blocked_by"] for r in c.rows()] == [None, None, "loop", None]


def test_output_cap_clamps_the_body_sent_upstream(tmp_path):
    with chain(tmp_path, "[breakers]\noutput_cap = 64\n") as c:
        f = c.call("long", max_tokens=5000)
        assert json.loads(f.request.content)["max_tokens"] == 64
        assert f.response.headers["x-turnout-clamped"] == c.rows()[0]["clamped"]


# -- Forward -------------------------------------------------------------------------------------


def test_forward_sends_to_the_upstream_with_an_exact_length(tmp_path):
    with chain(tmp_path, "[breakers]\noutput_cap = 64\n", turnout_upstream="http://127.0.0.1:9/base") as c:
        f = c.call("forward me", max_tokens=5000, headers={"transfer-encoding": "chunked"})
        assert (f.request.host, f.request.port, f.request.path) == ("127.0.0.1", 9, "/base/v1/chat/completions")
        assert int(f.request.headers["content-length"]) == len(f.request.content)
        assert "transfer-encoding" not in f.request.headers
        assert c.rows()[0]["host"] == "api.openai.com"  # the ledger names the host the client addressed
