"""The shared store's scripts against a real redis-server: admission, leases, idempotent settling,
spike buckets, loop counts, the cache and its bounds, and failing fast when the server is gone."""

from __future__ import annotations

import asyncio

import pytest

from turnout.ledger.budget_specs import parse_budgets
from turnout.ledger.budgets import BudgetBook
from turnout.ledger.shared_budgets import SharedBudgets
from turnout.ledger.shared_state import RedisState, StateUnavailable

# these tests are about the scripts, not outages: a loaded machine's first contact may take over 0.5 s
PATIENT = 5.0

NOW = 1_780_000_000.0


def run(coro):
    return asyncio.run(coro)


def budgets(url: str, entries: list[dict], clock=lambda: NOW, **kw) -> SharedBudgets:
    return SharedBudgets(parse_budgets(entries), RedisState(url, clock=clock, timeout=PATIENT), **kw)


def test_two_instances_admit_against_one_total(redis_server):
    async def go():
        a = budgets(redis_server.url, [{"name": "d", "usd": 1.0}])
        b = budgets(redis_server.url, [{"name": "d", "usd": 1.0}])
        r1 = await a.reserve({}, 0.6, 10, NOW, "f1")
        r2 = await b.reserve({}, 0.6, 10, NOW, "f2")  # 0.6 committed < 1.0: admitted (one worst case over)
        r3 = await a.reserve({}, 0.1, 10, NOW, "f3")  # 1.2 committed: refused on either instance
        assert r1.blocked_by is None and r2.blocked_by is None
        assert r3.blocked_by is not None and r3.blocked_by.reserved_requests == 2
        assert await a.settle(r1, 0.05, 20) is True
        await b.release(r2)
        r4 = await b.reserve({}, 0.1, 10, NOW, "f4")
        assert r4.blocked_by is None
        # settling twice (a retry after a timeout) counts once
        assert await b.settle(r4, 0.1, 5) is True
        r4.done = False
        assert await b.settle(r4, 0.1, 5) is False
        r5 = await a.reserve({}, 0.0, 0, NOW, "f5")
        assert r5.alerts == [] and r5.blocked_by is None
        st = await a.reserve({}, 2.0, 0, NOW, "f6")
        await a.release(st)
        await a.store.close(), await b.store.close()

    run(go())


def test_lease_expiry_gives_the_budget_back(redis_server):
    async def go():
        t = [NOW]
        a = budgets(redis_server.url, [{"name": "d", "requests": 1}], clock=lambda: t[0], lease=5)
        assert (await a.reserve({}, 0, 0, t[0], "crashed")).blocked_by is None
        assert (await a.reserve({}, 0, 0, t[0], "x")).blocked_by is not None  # held by the crashed call
        t[0] += 6
        assert (await a.reserve({}, 0, 0, t[0], "y")).blocked_by is None  # its lease ran out
        await a.store.close()

    run(go())


def test_rolling_window_and_scopes_and_seed(redis_server):
    async def go():
        t = [NOW]
        spec = [{"name": "r", "scope": "team", "rolling": "1h", "tokens": 100}]
        a = budgets(redis_server.url, spec, clock=lambda: t[0])
        r = await a.reserve({"team": "x"}, 0, 80, t[0], "f1")
        await a.settle(r, 0, 90)
        assert (await a.reserve({"team": "x"}, 0, 5, t[0], "f2")).blocked_by is None
        await a.release((await a.reserve({"team": "y"}, 0, 5, t[0], "f3")))
        t[0] += 3700  # the spend ages out of the window
        got = await a.reserve({"team": "x"}, 0, 5, t[0], "f4")
        assert got.blocked_by is None
        # seed: a ledger's spend added once per Redis lifetime
        book = BudgetBook(a.specs)
        book.reserve({"team": "z"}, 0, 0, t[0])
        book.counter(a.specs[0], "z").add(
            __import__("turnout.ledger.budgets", fromlist=["Amount"]).Amount(0, 150, 1), t[0]
        )
        entries = a.seed_entries(book, t[0])
        assert await a.store.seed(a.store.key("seeded", "i1"), entries) is True
        assert await a.store.seed(a.store.key("seeded", "i1"), entries) is False
        blocked = await a.reserve({"team": "z"}, 0, 1, t[0], "f5")
        assert blocked.blocked_by is not None and blocked.blocked_by.spent_tokens == 150
        await a.store.close()

    run(go())


def test_spike_loop_and_cache(redis_server):
    async def go():
        t = [NOW]
        s = RedisState(redis_server.url, clock=lambda: t[0], timeout=PATIENT)
        assert await s.spike([("g:rpm", 2, 1)]) == (0, 0.0)
        assert (await s.spike([("g:rpm", 2, 1)]))[0] == 0
        i, wait = await s.spike([("g:rpm", 2, 1)])
        assert i == 1 and 29 < wait <= 30
        t[0] += 30
        assert (await s.spike([("g:rpm", 2, 1)]))[0] == 0
        assert [await s.loop_count("k:fp", 10, f"m{i}") for i in range(3)] == [1, 2, 3]
        t[0] += 11
        assert await s.loop_count("k:fp", 10, "m9") == 1
        assert await s.cache_get("nope") is None
        await s.cache_put("k1", '{"a": 1}', "2026-01-01T00:00:00.000Z", 0.5, ttl=0, max_entries=2, max_bytes=10**6)
        assert (await s.cache_get("k1"))["cost_usd"] == 0.5
        await s.cache_put("k2", "{}", "x", None, ttl=0, max_entries=2, max_bytes=10**6)
        t[0] += 1
        await s.cache_get("k1")  # k1 is now the most recent: k2 goes first
        assert await s.cache_put("k3", "{}", "x", None, ttl=0, max_entries=2, max_bytes=10**6) == 1
        assert await s.cache_get("k2") is None and await s.cache_get("k1") is not None
        await s.close()

    run(go())


def test_a_dead_server_fails_fast_and_recovers(redis_server):
    async def go():
        changes = []
        s = RedisState(redis_server.url, timeout=0.2, on_change=lambda ok, why: changes.append(ok))
        assert await s.loop_count("a", 10, "1") == 1
        redis_server.stop()
        with pytest.raises(StateUnavailable):
            await s.loop_count("a", 10, "2")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(StateUnavailable, match="unavailable"):
            await s.loop_count("a", 10, "3")  # backing off: no wait at all
        assert loop.time() - t0 < 0.05
        redis_server.start()
        await asyncio.sleep(0.3)
        assert await s.loop_count("a", 10, "4") == 1  # a cold server
        assert changes == [False, True]
        await s.close()

    run(go())
