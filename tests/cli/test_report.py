"""`turnout report`: exact numbers over a hand-built ledger, --since parsing, and the three output formats."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from turnout.cli.main import main
from turnout.addons.record import flow_mark
from turnout.ledger import report as rpt
from turnout.ledger.store import iso_utc, open_ledger

NOW = time.time()


def flow(i: int, **kw) -> dict:
    row = {
        "id": f"f{i}", "started_at": iso_utc(NOW - 60), "provider": "openai", "endpoint": "chat",
        "requested_model": "gpt-4o", "model": "gpt-4o", "stream": 0, "prompt_tokens": 100, "cached_prompt_tokens": 0,
        "completion_tokens": 10, "cost_usd": 0.25, "latency_ms": 100.0, "api_key_fp": "sk-…0001",
    }  # fmt: skip
    row.update(kw)
    return row


ROWS = [
    # gpt-4o: 4 calls in the window
    flow(
        1, cost_usd=0.5, cached_prompt_tokens=20, stream=1, ttft_ms=50.0, latency_ms=100.0, cache="miss", feature="chat"
    ),
    flow(2, error="HTTP 500: boom", latency_ms=200.0, feature="chat"),
    flow(3, cost_usd=0.0, cache="hit", saved_usd=0.5, latency_ms=300.0, feature="chat"),
    flow(
        4,
        routed=1,
        decision="route",
        model="gpt-4o-mini",
        baseline_cost_usd=1.0,
        stream=1,
        ttft_ms=80.0,
        latency_ms=400.0,
        feature="search",
    ),  # fmt: skip
    # gpt-4o-mini: observe mode, the router would have routed both
    flow(
        5,
        requested_model="gpt-4o-mini",
        model="gpt-4o-mini",
        cost_usd=0.5,
        decision="route",
        projected_cost_usd=0.125,
        latency_ms=1000.0,
        feature="search",
        blocked_by=None,
    ),  # fmt: skip
    flow(
        6,
        requested_model="gpt-4o-mini",
        model="gpt-4o-mini",
        cost_usd=0.5,
        decision="route",
        projected_cost_usd=0.125,
        latency_ms=2000.0,
        feature="search",
    ),  # fmt: skip
    # no model (unparsed), unpriced, blocked
    flow(7, requested_model=None, model=None, cost_usd=None, latency_ms=500.0, blocked_by="budget:daily"),
    # outside a 7-day window
    flow(8, started_at=iso_utc(NOW - 30 * 86400), cost_usd=100.0, latency_ms=99999.0),
]


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "turnout.db"
    db = open_ledger(path)
    db["flows"].insert_all(ROWS)
    db.conn.close()
    return path


def test_groups_by_model_with_exact_numbers(ledger: Path) -> None:
    db = open_ledger(ledger)
    r = rpt.report(db, rpt.parse_since("7d"), "model")
    assert [g.group for g in r.groups] == ["gpt-4o", "gpt-4o-mini", "(none)"]  # by cost, then calls
    big, mini, none = r.groups

    assert (big.requests, big.errors, big.error_rate) == (4, 1, 0.25)
    assert (big.prompt_tokens, big.cached_prompt_tokens, big.completion_tokens) == (400, 20, 40)
    assert big.cost_usd == pytest.approx(1.0) and big.cost_share == pytest.approx(0.5)
    # nearest rank over [100, 200, 300, 400]: p50 = 2nd, p95 = p99 = 4th
    assert (big.latency_p50_ms, big.latency_p95_ms, big.latency_p99_ms) == (200.0, 400.0, 400.0)
    assert (big.streams, big.ttft_p50_ms, big.ttft_p95_ms) == (2, 50.0, 80.0)  # ttft over streams only
    assert (big.cache_hits, big.cache_hit_rate, big.cache_saved_usd) == (1, 0.25, 0.5)
    assert (big.routed, big.routed_saving_usd) == (1, pytest.approx(0.75))
    assert big.projected_saving_usd == 0

    assert mini.projected_saving_usd == pytest.approx(0.75)  # 2 × (0.5 - 0.125)
    assert mini.routed == 0 and mini.cost_share == pytest.approx(0.5)
    assert (mini.latency_p50_ms, mini.latency_p99_ms) == (1000.0, 2000.0)
    assert mini.ttft_p50_ms is None

    assert (none.requests, none.unpriced, none.blocked, none.cost_usd) == (1, 1, 1, 0.0)

    t = r.total
    assert (t.requests, t.errors, t.cost_usd, t.blocked) == (7, 1, pytest.approx(2.0), 1)  # row 8 is outside
    # all 7 latencies: [100, 200, 300, 400, 500, 1000, 2000] → p50 = 4th, p95 = p99 = 7th
    assert (t.latency_p50_ms, t.latency_p95_ms, t.latency_p99_ms) == (400.0, 2000.0, 2000.0)
    assert (t.ttft_p50_ms, t.ttft_p95_ms) == (50.0, 80.0)
    assert t.cache_saved_usd == 0.5 and t.routed_saving_usd == pytest.approx(0.75)
    assert t.projected_saving_usd == pytest.approx(0.75)

    assert sum(c for _, m, c in r.daily_cost if m == "gpt-4o") == pytest.approx(1.0)
    assert sum(n for _, n in r.latency_histogram) == 7
    assert dict(r.latency_histogram)["<250ms"] == 2 and dict(r.latency_histogram)["<100ms"] == 0


def test_whole_ledger_and_other_groupings(ledger: Path) -> None:
    db = open_ledger(ledger)
    everything = rpt.report(db, None, "model")
    assert everything.total.requests == 8 and everything.total.latency_p99_ms == 99999.0
    by_feature = {g.group: g for g in rpt.report(db, rpt.parse_since("7d"), "feature").groups}
    assert set(by_feature) == {"chat", "search", "(none)"}
    assert by_feature["search"].requests == 3 and by_feature["search"].routed == 1
    by_key = rpt.report(db, rpt.parse_since("7d"), "key").groups
    assert [g.group for g in by_key] == ["sk-…0001"] and by_key[0].requests == 7
    by_day = rpt.report(db, None, "day").groups
    assert [g.group for g in by_day] == sorted(g.group for g in by_day) and len(by_day) >= 2
    hours = rpt.report(db, None, "hour").groups
    assert all(g.group.endswith(":00Z") for g in hours)
    with pytest.raises(ValueError):
        rpt.report(db, None, "colour")


def test_nearest_rank_single_value_and_ties() -> None:
    import numpy as np

    assert rpt.nearest_rank(np.array([7.0]), 99) == 7.0
    assert rpt.nearest_rank(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]), 50) == 5.0
    assert rpt.nearest_rank(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]), 95) == 10.0
    assert rpt.nearest_rank(np.array([]), 50) is None


def test_parse_since() -> None:
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert rpt.parse_since("7d", now=now) == iso_utc(now - 7 * 86400)
    assert rpt.parse_since("24h", now=now) == iso_utc(now - 86400)
    assert rpt.parse_since("30m", now=now) == iso_utc(now - 1800)
    assert rpt.parse_since("2w", now=now) == iso_utc(now - 14 * 86400)
    assert rpt.parse_since("2026-11-01") == "2026-11-01T00:00:00.000Z"
    assert rpt.parse_since("2026-11-01T12:30") == "2026-11-01T12:30:00.000Z"
    assert rpt.parse_since("all") is None and rpt.parse_since(None) is None
    for bad in ("7x", "yesterday", "0d", "-1d", "2026-13-01"):
        with pytest.raises(ValueError):
            rpt.parse_since(bad)


def test_csv_and_json_output(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(ledger), "--since", "7d", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["model"] for r in rows] == ["gpt-4o", "gpt-4o-mini", "(none)", "total"]
    assert rows[0]["requests"] == "4" and float(rows[0]["cost_share"]) == pytest.approx(0.5)
    assert rows[0]["latency_p50_ms"] == "200.0" and rows[2]["ttft_p50_ms"] == ""
    assert rows[-1]["requests"] == "7"

    assert main(["report", "--db", str(ledger), "--since", "7d", "--by", "feature", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["by"] == "feature" and data["total"]["requests"] == 7
    assert {g["group"] for g in data["groups"]} == {"chat", "search", "(none)"}
    assert data["daily_cost"] and data["latency_histogram"][0] == {"bucket": "<100ms", "flows": 0}


def test_table_reads_in_a_monochrome_log(ledger: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "turnout.cli", "report", "--db", str(ledger), "--since", "7d",
         "--html", str(tmp_path / "r.html")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "\x1b[" not in text  # no colour codes in a log
    assert "turnout report · by model" in text and "7 calls" in text and "$2.00" in text
    assert "share of cost" in text and "█████ " in text  # gpt-4o: half of the cost, a half-full bar
    assert "Daily cost" in text and any(c in text for c in rpt.SPARK)
    assert "(none)" in text and "p95" in text and "would save (observe)" in text
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")


def test_missing_and_empty_ledgers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.db"
    assert main(["report", "--db", str(missing)]) == 1
    assert "no ledger at" in capsys.readouterr().err and not missing.exists()  # never creates one

    empty = tmp_path / "empty.db"
    open_ledger(empty).conn.close()
    assert main(["report", "--db", str(empty)]) == 0
    assert "No LLM calls recorded in this period" in capsys.readouterr().out
    assert main(["report", "--db", str(empty), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"] == []
    assert main(["report", "--db", str(empty), "--since", "last tuesday"]) == 2
    assert "--since wants" in capsys.readouterr().err


def test_flows_summary_view(ledger: Path) -> None:
    db = open_ledger(ledger)
    rows = {r["id"]: r for r in db.query("select * from flows_summary")}
    assert rows["f3"]["saved_usd"] == 0.5 and rows["f4"]["saved_usd"] == 0.75
    assert rows["f5"]["projected_saving_usd"] == 0.375 and rows["f2"]["ok"] == 0 and rows["f1"]["tokens"] == 110
    assert "request_body" not in rows["f1"]


def test_text_helpers() -> None:
    assert rpt.bar(0.5, 10) == "█████     " and rpt.bar(0, 4) == "    " and rpt.bar(1, 3) == "███"
    assert rpt.sparkline([0, 1, 2, 4]) == "▁▃▅█" and rpt.sparkline([0, 0]) == "▁▁"
    assert rpt.fmt_usd(0.0004) == "$0.0004" and rpt.fmt_usd(1234.5) == "$1,234.50"
    assert rpt.fmt_ms(1500) == "1.50s" and rpt.fmt_ms(12.3) == "12ms"


def test_flow_marks() -> None:
    assert flow_mark({"blocked_by": "budget:daily", "cache": "hit"}) == ":no_entry:"
    assert flow_mark({"cache": "hit", "routed": 1}) == ":zap:"
    assert flow_mark({"routed": 1}) == ":twisted_rightwards_arrows:"
    assert flow_mark({"cache": "miss", "routed": None}) == ""


@pytest.mark.parametrize("by", ["model", "user", "day", "feature"])
def test_parallel_halves_give_the_same_report(ledger: Path, monkeypatch: pytest.MonkeyPatch, by: str) -> None:
    db = open_ledger(ledger)
    one_pass = rpt.report(db, None, by).to_dict()
    monkeypatch.setattr(rpt, "PARALLEL_MIN_FLOWS", 1)  # split this small ledger in two, as a big one would be
    halves = rpt.report(db, None, by).to_dict()
    for d in (one_pass, halves):
        d.pop("until")
    assert _rounded(halves) == _rounded(one_pass)


def _rounded(x):  # float sums may differ in the last bits with the order of addition
    if isinstance(x, float):
        return round(x, 9)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v) for v in x]
    return x
