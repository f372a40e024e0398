"""`turnout report --html`: the page renders in a real headless Chromium, tables and charts present, no external assets."""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from turnout.ledger.store import iso_utc, open_ledger

CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (run scripts/ensure-chromium as root)")


def synthetic_ledger(path: Path, days: int = 10, per_day: int = 40) -> None:
    rng = random.Random(3)
    models = [("gpt-4o", 0.01), ("gpt-4o-mini", 0.0006), ("o3-mini", 0.004)]
    now = time.time()
    rows = []
    for d in range(days):
        for i in range(per_day):
            model, price = rng.choice(models)
            hit = rng.random() < 0.15
            routed = model == "gpt-4o" and rng.random() < 0.3
            rows.append({
                "id": f"{d}-{i}", "started_at": iso_utc(now - d * 86400 - rng.random() * 3600), "provider": "openai",
                "requested_model": model, "model": model, "stream": int(rng.random() < 0.5),
                "prompt_tokens": 500, "completion_tokens": 50, "cost_usd": 0.0 if hit else price,
                "latency_ms": round(rng.lognormvariate(6.5, 0.9), 3), "ttft_ms": 120.0, "cache": "hit" if hit else "miss",
                "saved_usd": price if hit else None, "routed": 1 if routed else None,
                "baseline_cost_usd": price * 3 if routed else None, "decision": "route" if routed else "keep",
                "feature": rng.choice(["search", "chat", "triage"]), "error": "HTTP 429" if rng.random() < 0.03 else None,
            })  # fmt: skip
    db = open_ledger(path)
    db["flows"].insert_all(rows)
    db.conn.close()


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    db = tmp_path / "turnout.db"
    synthetic_ledger(db)
    page = tmp_path / "report.html"
    out = subprocess.run(
        [sys.executable, "-m", "turnout.cli", "report", "--db", str(db), "--since", "30d", "--html", str(page)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    html = page.read_text()
    # self-contained: no scripts, no external stylesheets, images or fonts
    assert not re.search(r"<script|<link\b|<img\b|src=|url\(|@import", html, re.I)
    assert not re.search(r"(href|xlink:href)=\"https?:", html)

    shot = tmp_path / "report.png"
    res = chromium("--screenshot=" + str(shot), "--window-size=1280,2000", page.as_uri(), profile=tmp_path / "p1")
    assert shot.exists(), res.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1280, 2000)
    assert len(png) > 40_000  # a blank or error page compresses to a few KB
    print(f"screenshot: {shot}")

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p2").stdout
    for table in ("spend", "latency", "savings"):
        m = re.search(rf'<table id="{table}">(.*?)</table>', dom, re.S)
        assert m, f"table #{table} missing"
        assert m.group(1).count("<tr") == 1 + 3 + 1  # header, 3 models, total
    for chart in ("chart-daily-cost", "chart-latency", "chart-savings"):
        m = re.search(rf'<svg id="{chart}".*?</svg>', dom, re.S)
        assert m, f"chart #{chart} missing"
        assert m.group(0).count('class="bar"') >= 3
    daily = re.search(r'<svg id="chart-daily-cost".*?</svg>', dom, re.S).group(0)
    assert daily.count('class="bar"') >= 10 * 2  # 10 days, several models a day
    assert "gpt-4o-mini" in daily and "by cache" in dom and "total" in dom


def test_empty_html_report(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    open_ledger(db).conn.close()
    page = tmp_path / "empty.html"
    out = subprocess.run(
        [sys.executable, "-m", "turnout.cli", "report", "--db", str(db), "--html", str(page)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p").stdout
    assert 'id="empty"' in dom and "No LLM calls recorded" in dom
