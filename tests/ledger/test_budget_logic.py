"""Budgets and breakers: pure logic — specs, windows, rolling, reservations, rebuild, breakers."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.ledger.breakers import (
    LoopDetector,
    SpikeLimiter,
    SpikeSpec,
    TokenBucket,
    clamp_output,
    parse_breakers,
    request_fingerprint,
)
from turnout.ledger.budget_specs import parse_budgets
from turnout.ledger.budgets import BudgetBook
from turnout.ledger.durations import parse_duration
from turnout.ledger.request_size import max_output, prompt_tokens, worst_case
from turnout.ledger.windows import window_end, window_start
from turnout.ledger.pricing import ModelRates
from turnout.ledger.store import iso_utc, open_ledger


def ts(s: str) -> float:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp()


G = {"key": "k1", "team": "t1", "feature": None, "user": None, "model": "gpt-4o"}


def book(*entries: dict) -> BudgetBook:
    return BudgetBook(parse_budgets(list(entries)))


# -- specs ---------------------------------------------------------------------------------


def test_parse_budget_spec_defaults_and_fields():
    (a, b) = parse_budgets(
        [
            {"name": "g", "usd": 5, "alert_at": 0.8},
            {"scope": "team", "match": "search", "rolling": "24h", "tokens": 1000, "throttle_rpm": 3},
        ]
    )
    assert (a.scope, a.window, a.rolling, a.usd, a.block, a.alert_at) == ("global", "day", None, 5.0, True, 0.8)
    assert (b.name, b.window, b.rolling, b.tokens, b.throttle_at) == ("team-search-24h", None, 86400.0, 1000, 0.0)


@pytest.mark.parametrize(
    "entry, msg",
    [
        ({"usd": 1, "scope": "planet"}, "scope must be one of"),
        ({"usd": 1, "window": "week"}, "window must be one of"),
        ({"usd": 1, "window": "day", "rolling": "1h"}, "either window or rolling"),
        ({"name": "x"}, "needs a limit"),
        ({"usd": -1}, "non-negative"),
        ({"usd": 1, "alert_at": 80}, "fraction"),
        ({"usd": 1, "rolling": "soon"}, "not a duration"),
        ({"usd": 1, "limit": 3}, "unknown key"),
        ({"requests": 1.5}, "whole number"),
        ({"usd": 1, "throttle_at": 0.5}, "needs throttle_rpm"),
    ],
)
def test_bad_budget_specs_are_value_errors(entry, msg):
    with pytest.raises(ValueError, match=msg):
        parse_budgets([entry])


def test_duplicate_names_and_non_array():
    with pytest.raises(ValueError, match="duplicate"):
        parse_budgets([{"name": "a", "usd": 1}, {"name": "a", "usd": 2}])
    with pytest.raises(ValueError, match="array"):
        parse_budgets({"usd": 1})


def test_parse_duration():
    assert parse_duration("3s") == 3 and parse_duration("15m") == 900 and parse_duration("2d") == 172800
    assert parse_duration(90) == 90 and parse_duration("250ms") == 0.25


# -- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window, now, start, end",
    [
        ("minute", "2024-05-01T10:11:12.5", "2024-05-01T10:11:00", "2024-05-01T10:12:00"),
        ("hour", "2024-05-01T10:11:12", "2024-05-01T10:00:00", "2024-05-01T11:00:00"),
        ("day", "2024-12-31T23:59:59", "2024-12-31T00:00:00", "2025-01-01T00:00:00"),
        ("month", "2024-02-10T05:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
        ("month", "2024-12-31T23:00:00", "2024-12-01T00:00:00", "2025-01-01T00:00:00"),
    ],
)
def test_calendar_windows_are_utc(window, now, start, end):
    assert window_start(window, ts(now)) == ts(start)
    assert window_end(window, ts(now)) == ts(end)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["minute", "hour", "day", "month"]), st.floats(min_value=0, max_value=4e9))
def test_window_contains_now(window, now):
    assert window_start(window, now) <= now < window_end(window, now)


def test_calendar_window_resets_at_the_boundary():
    b = book({"name": "d", "usd": 1.0})
    t = ts("2024-05-01T23:59:00")
    r = b.reserve(G, 0.4, 10, t)
    b.settle(r, 0.9, 10, t)
    assert b.statuses(t)[0].spent_usd == 0.9
    assert b.statuses(t)[0].resets_at == ts("2024-05-02T00:00:00")
    assert b.reserve(G, 0.2, 1, t).admitted  # 0.9 < 1: admitted, reserves 0.2
    assert b.reserve(G, 0.2, 1, t + 1).blocked_by is not None  # 0.9 + 0.2 reserved >= 1
    st_ = b.statuses(t + 61)[0]
    assert st_.spent_usd == 0 and st_.reserved_usd == pytest.approx(0.2)  # new day; in-flight carried


def test_rolling_window_ages_out():
    b = book({"name": "r", "requests": 2, "rolling": "3s"})
    t = 1000.0
    for i in range(2):
        r = b.reserve(G, 0, 0, t + i * 0.5)
        assert r.admitted
        b.settle(r, 0, 0, t + i * 0.5)
    blocked = b.reserve(G, 0, 0, t + 1)
    assert blocked.blocked_by is not None and blocked.blocked_by.state == "blocked"
    assert blocked.blocked_by.resets_at == pytest.approx(t + 3, abs=0.05)
    assert b.reserve(G, 0, 0, t + 3.1).admitted  # the first one aged out
    assert not b.reserve(G, 0, 0, t + 3.2).admitted  # the second one (t+0.5) has not yet


# -- reservations ----------------------------------------------------------------------------


def test_reserve_settle_release_arithmetic():
    b = book({"name": "g", "usd": 1.0, "tokens": 1000})
    r1 = b.reserve(G, 0.3, 300, 0)
    r2 = b.reserve(G, 0.3, 300, 0)
    s = b.statuses(0)[0]
    assert (s.reserved_usd, s.reserved_tokens, s.reserved_requests) == (pytest.approx(0.6), 600, 2)
    b.settle(r1, 0.1, 50, 1)
    b.settle(r1, 5.0, 5000, 1)  # settling twice is a no-op
    b.release(r2)
    s = b.statuses(1)[0]
    assert (s.spent_usd, s.spent_tokens, s.spent_requests) == (pytest.approx(0.1), 50, 1)
    assert (s.reserved_usd, s.reserved_tokens, s.reserved_requests) == (0, 0, 0)
    assert s.state == "ok"


def test_scoped_budgets_count_per_value_and_match_only_their_value():
    b = book(
        {"name": "per-team", "scope": "team", "requests": 1},
        {"name": "search", "scope": "team", "match": "search", "requests": 5},
    )
    a = {**G, "team": "a"}
    assert b.reserve(a, 0, 0, 0).admitted
    assert b.reserve(a, 0, 0, 0).blocked_by.name == "per-team"
    assert b.reserve({**G, "team": "b"}, 0, 0, 0).admitted  # another team, another counter
    assert b.reserve({**G, "team": None}, 0, 0, 0).admitted  # no team: the budget does not apply
    names = {(s.name, s.scope_value) for s in b.statuses(0)}
    assert names == {("per-team", "a"), ("per-team", "b"), ("search", "search")}


def test_alert_once_per_window_and_throttle():
    b = book({"name": "g", "requests": 10, "alert_at": 0.5, "throttle_at": 0.7, "throttle_rpm": 2, "block": True})
    alerts = []
    for i in range(7):
        r = b.reserve(G, 0, 0, i)
        assert r.admitted
        b.settle(r, 0, 0, i)
        alerts.append((len(r.alerts), len(r.new_alerts)))
    assert alerts[4] == (0, 0) and alerts[5] == (1, 1) and alerts[6] == (1, 0)  # 5/10 spent when the 6th came
    # 7/10 >= throttle_at: at most 2 a minute — 7 were admitted in the last minute
    r = b.reserve(G, 0, 0, 7)
    assert r.throttled_by is not None and r.throttled_by.state == "throttled"
    assert b.reserve(G, 0, 0, 70).admitted  # a minute later the rpm window is clear


def test_block_false_only_alerts():
    b = book({"name": "soft", "requests": 1, "block": False, "alert_at": 1.0})
    for i in range(3):
        r = b.reserve(G, 0, 0, i)
        assert r.admitted
        b.settle(r, 0, 0, i)
    assert b.statuses(3)[0].state == "alert"


def test_zero_limit_blocks_everything():
    assert book({"name": "z", "usd": 0}).reserve(G, 0, 0, 0).blocked_by is not None


@settings(max_examples=100, deadline=None)
@given(
    limit=st.floats(min_value=0.01, max_value=10),
    worst=st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=60),
    ratio=st.floats(min_value=0, max_value=1),
)
def test_concurrent_overshoot_is_bounded_by_one_worst_case(limit, worst, ratio):
    """All requests arrive before any settles; each settles at `ratio` of its worst case.
    The spend can pass the limit by at most one reservation (the one that crossed it)."""
    b = book({"name": "g", "usd": limit})
    held = [r for w in worst if (r := b.reserve(G, w, 0, 0)).admitted]
    for r in held:
        b.settle(r, r.amount.usd * ratio, 0, 1)
    spent = b.statuses(1)[0].spent_usd
    assert spent <= limit + max(worst) + 1e-9
    assert sum(r.amount.usd for r in held) < limit + max(worst) + 1e-9


# -- rebuild ---------------------------------------------------------------------------------


def test_rebuild_from_ledger(tmp_path):
    db = open_ledger(tmp_path / "l.db")
    now = ts("2024-05-01T12:00:00")
    rows = [
        ("a", now - 10, 0.5, "k1", "t1", None, None, None),
        ("b", now - 3600 * 13, 0.25, "k1", "t1", None, None, None),  # yesterday: outside the day window
        ("c", now - 20, 9.0, "k1", "t1", "budget:x", None, None),  # blocked: costs nothing
        ("d", now - 30, 9.0, "k1", "t1", None, "hit", None),  # cache hit: costs nothing
        ("e", now - 40, None, "k1", "t1", None, None, "HTTP 500"),  # failed, no usage
        ("f", now - 50, 0.125, "k2", "t2", None, None, None),
    ]
    for id_, at, cost, key, team, blocked, cache, error in rows:
        db["flows"].insert(
            {"id": id_, "started_at": iso_utc(at), "cost_usd": cost, "api_key_fp": key, "team": team,
             "blocked_by": blocked, "cache": cache, "error": error, "model": "gpt-4o",
             "prompt_tokens": None if error else 10, "completion_tokens": None if error else 5}
        )  # fmt: skip
    b = book({"name": "day", "usd": 10}, {"name": "per-team", "scope": "team", "rolling": "24h", "usd": 10})
    assert b.rebuild_from_ledger(db, now) == 3
    by = {(s.name, s.scope_value): s for s in b.statuses(now)}
    assert by[("day", "*")].spent_usd == pytest.approx(0.625)
    assert by[("day", "*")].spent_requests == 2
    assert by[("day", "*")].spent_tokens == 30
    assert by[("per-team", "t1")].spent_usd == pytest.approx(0.75)  # rolling 24h reaches yesterday
    assert by[("per-team", "t2")].spent_usd == pytest.approx(0.125)


# -- estimates -------------------------------------------------------------------------------


def test_worst_case_estimate():
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
    }
    p = prompt_tokens(body)
    assert 5 <= p <= 30
    assert max_output(body, 4096) == 4096
    assert max_output({**body, "max_tokens": 50, "max_completion_tokens": 70}, 4096) == 50
    assert max_output({**body, "max_output_tokens": 10, "n": 3}, 4096) == 30
    rates = ModelRates(input_mtok=2.5, output_mtok=10.0, cached_input_mtok=None, source="t")
    assert worst_case(1000, 100, rates) == pytest.approx(0.0035)
    assert worst_case(1000, 100, None) == 0.0


# -- breakers --------------------------------------------------------------------------------


def test_request_fingerprint_ignores_who_and_transport():
    a = {"model": "m", "messages": [{"role": "user", "content": "x"}], "user": "u1", "stream": True}
    b = {"messages": [{"role": "user", "content": "x"}], "model": "m", "user": "u2", "metadata": {"a": "b"}}
    c = {"model": "m", "messages": [{"role": "user", "content": "y"}]}
    assert request_fingerprint("chat", a) == request_fingerprint("chat", b) != request_fingerprint("chat", c)


def test_loop_detector_trips_and_recovers():
    d = LoopDetector(threshold=3, window=2.0)
    assert [d.hit("k", "f", t) for t in (0, 0.1, 0.2)] == [False] * 3
    assert d.hit("k", "f", 0.3)  # 4th within 2 s
    assert not d.hit("other-key", "f", 0.3) and not d.hit("k", "g", 0.3)
    assert d.hit("k", "f", 1.0)  # still looping (refused attempts count)
    assert not d.hit("k", "f", 3.1)  # calmed down
    assert not LoopDetector(0, 10).enabled


def test_token_bucket_and_spike_limiter():
    b = TokenBucket(60, now=0)  # 1 per second, burst 60
    assert all(b.take(1, 0) for _ in range(60)) and not b.take(1, 0)
    assert b.retry_after(1, 0) == pytest.approx(1.0)
    assert b.take(1, 1.0)
    lim = SpikeLimiter([SpikeSpec("key", rpm=2), SpikeSpec("global", tpm=100)])
    assert lim.check(G, 10, 0) is None and lim.check(G, 10, 0) is None
    spec, value, wait = lim.check(G, 10, 0)
    assert (spec.scope, value) == ("key", "k1") and wait == pytest.approx(30)
    assert lim.check({**G, "key": "k2"}, 70, 0) is None  # another key; global tokens 100-20-70=10 left
    spec, value, _ = lim.check({**G, "key": "k3"}, 50, 0)
    assert spec.scope == "global"


def test_clamp_output():
    body = {"max_tokens": 100000, "max_completion_tokens": 50}
    assert clamp_output("chat", body, 4096) == "max_tokens 100000→4096"
    assert body == {"max_tokens": 4096, "max_completion_tokens": 50}
    assert clamp_output("chat", {"max_tokens": 10}, 4096) is None
    unset: dict = {}
    assert clamp_output("responses", unset, 256) == "max_output_tokens unset→256" and unset["max_output_tokens"] == 256
    assert clamp_output("chat", {}, 256, when_unset=False) is None
    assert clamp_output("embeddings", {"max_tokens": 9}, 1) is None
    assert clamp_output("chat", {"max_tokens": 9}, None) is None


def test_parse_breakers():
    cfg = parse_breakers(
        {"loop_threshold": 5, "loop_window": "10s", "output_cap": 4096, "output_cap_features": {"sum": 512},
         "spike": [{"scope": "key", "rpm": 600, "tpm": 1000}]}
    )  # fmt: skip
    assert (cfg.loop_threshold, cfg.loop_window, cfg.cap_for("sum"), cfg.cap_for("x"), cfg.cap_for(None)) == (
        5,
        10,
        512,
        4096,
        4096,
    )
    assert cfg.spikes == (SpikeSpec("key", 600, 1000),)
    with pytest.raises(ValueError, match="unknown"):
        parse_breakers({"loop": 1})
    with pytest.raises(ValueError, match="rpm and/or tpm"):
        parse_breakers({"spike": [{"scope": "key"}]})


def test_idle_counters_are_forgotten_but_spend_is_kept():
    (spec,) = parse_budgets([{"name": "per-user", "scope": "user", "window": "day", "requests": 5}])
    book = BudgetBook([spec], sweep_threshold=10)
    now = 1_800_000_000.0
    spender = book.reserve({"user": "spender"}, 0.0, 0, now)
    book.settle(spender, 0.0, 10, now)
    held = book.reserve({"user": "in-flight"}, 0.0, 0, now)
    for i in range(30):  # many users who came and went yesterday
        r = book.reserve({"user": f"u{i}"}, 0.0, 0, now - 86_400 + i * 120)
        book.release(r)
    assert len(book.counters) < 32  # swept as the table grew
    book.sweep(now)
    assert set(v for _, v in book.counters) == {"spender", "in-flight"}
    assert book.counter(spec, "spender").spent(now).requests == 1
    assert book.counter(spec, "in-flight").reserved.requests == 1
    book.release(held)


def test_full_spike_buckets_are_forgotten():
    limiter = SpikeLimiter([SpikeSpec(scope="user", rpm=60, tpm=None)], sweep_threshold=10)
    for i in range(40):  # one request each, a second apart: earlier buckets refill (1 request/s)
        assert limiter.check({"user": f"u{i}"}, 0, 1000.0 + i) is None
    assert len(limiter.buckets) < 40
    assert limiter.check({"user": "u39"}, 0, 1039.5) is None  # the active one kept its level
    assert limiter.buckets[(0, "rpm", "u39")].available(1039.5) < 59
