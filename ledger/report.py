"""`turnout report`: per-group spend, errors, latency, cache and routing savings — SQL over the ledger.

Pure queries, no rendering (the terminal table is `turnout.addons.report_cmd`, the HTML page
`turnout.ledger.report_html`). Everything per group comes from ONE GROUP BY pass over a
covering index (migration m006_reports), so the wide rows with bodies are never read: sums in
SQL, and each group's latencies as one `group_concat` string that numpy parses and sorts for
exact nearest-rank percentiles (the value at rank ceil(p/100 · n), ascending). The totals and the
latency histogram come from the same pass (and the daily cost per model too, when grouping by
model, day or hour); on big ledgers it runs as two halves of the period in parallel.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sqlite_utils

from .durations import parse_duration
from .store import iso_utc

# --by name → the SQL expression that names a row's group.
GROUPS: dict[str, str] = {
    "model": "requested_model",
    "provider": "provider",
    "feature": "feature",
    "team": "team",
    "user": '"user"',  # quoted: a reserved word in PostgreSQL
    "key": "api_key_fp",
    "task": "task",
    "day": "substr(started_at, 1, 10)",
    "hour": "substr(started_at, 1, 13) || ':00Z'",
    # failed-over calls by the provider asked, the one that answered and why ("(none)": not failed over)
    "failover": "CASE WHEN failover_from IS NULL THEN NULL ELSE substr(failover_from, 1, instr(failover_from, ':') - 1)"
    " || ' → ' || provider || ' (' || coalesce(failover_reason, '?') || ')' END",
}
NONE_LABEL = "(none)"
PERCENTILES = (50, 95, 99)
TTFT_PERCENTILES = (50, 95)
# Upper bounds (ms) of the latency histogram's buckets; the last bucket is open-ended.
LATENCY_BUCKETS_MS = (100, 250, 500, 1000, 2000, 5000, 10000, 30000)


def parse_since(value: str | None, *, now: float | None = None) -> str | None:
    """`7d`, `24h`, `30m`, `2w` or a date/time `2026-11-01[T12:00]` (UTC) to the ledger's timestamp format.

    None or "" or "all" means the whole ledger (returns None). Raises ValueError on anything else.
    """
    if value is None or value.strip().lower() in ("", "all"):
        return None
    now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    if value.strip()[-1:].isalpha():  # a duration back from now, in the config's syntax
        try:
            seconds = parse_duration(value.strip().lower())
        except ValueError:
            raise ValueError(f"--since wants 7d, 24h, 30m, 2w or a date like 2026-11-01, not {value!r}") from None
        if seconds <= 0:
            raise ValueError(f"--since must be a positive duration, not {value!r}")
        return iso_utc(now - seconds)
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since wants 7d, 24h, 30m, 2w or a date like 2026-11-01, not {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return iso_utc(when.timestamp())


@dataclass
class GroupStats:
    group: str
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_share: float = 0.0  # of the report's total cost, 0..1
    unpriced: int = 0  # rows with usage but no known price
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    streams: int = 0
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    cache_hits: int = 0
    cache_hit_rate: float = 0.0  # hits / requests
    cache_saved_usd: float = 0.0
    routed: int = 0
    routed_saving_usd: float = 0.0  # baseline - actual cost on routed rows
    projected_saving_usd: float = 0.0  # observe mode: cost - projected cost where the router would route
    blocked: int = 0


@dataclass
class Report:
    by: str
    since: str | None  # ISO UTC, None = the whole ledger
    until: str  # when the report was made
    first_at: str | None  # the earliest / latest flow in the period
    last_at: str | None
    total: GroupStats
    groups: list[GroupStats]
    daily_cost: list[tuple[str, str, float]] = field(default_factory=list)  # (day, model, cost_usd)
    latency_histogram: list[tuple[str, int]] = field(default_factory=list)  # (bucket label, flows)
    quality_daily: list[dict[str, Any]] = field(default_factory=list)  # shadow verdicts per day and mode

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since,
            "until": self.until,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "total": asdict(self.total),
            "groups": [asdict(g) for g in self.groups],
            "daily_cost": [{"day": d, "model": m, "cost_usd": c} for d, m, c in self.daily_cost],
            "latency_histogram": [{"bucket": b, "flows": n} for b, n in self.latency_histogram],
            "quality_daily": self.quality_daily,
        }

    def to_csv(self) -> str:
        """One line per group plus a final `total` line; columns are GroupStats' fields."""
        out = io.StringIO()
        names = [f for f in GroupStats.__dataclass_fields__]
        w = csv.writer(out, lineterminator="\n")
        w.writerow([self.by if n == "group" else n for n in names])
        for g in [*self.groups, self.total]:
            w.writerow(["" if v is None else v for v in (getattr(g, n) for n in names)])
        return out.getvalue()

    @property
    def empty(self) -> bool:
        return self.total.requests == 0


def _conn(db: sqlite_utils.Database | sqlite3.Connection) -> sqlite3.Connection:
    return db.conn if isinstance(db, sqlite_utils.Database) else db


REPORT_INDEX = "idx_flows_report"  # the covering index of migration m006_reports


def _source(conn: sqlite3.Connection) -> str:
    """`flows`, read through the covering index when the ledger has it (never the wide rows with bodies).

    The central ledger (PostgreSQL) has no such hint: its planner picks the `started_at` index.
    """
    if not isinstance(conn, sqlite3.Connection):
        return "flows"
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [REPORT_INDEX]).fetchone()
    return f"flows INDEXED BY {REPORT_INDEX}" if has else "flows"


def _where(since: str | None) -> tuple[str, list[Any]]:
    return ("WHERE started_at >= ?", [since]) if since else ("", [])


# One pass: sums per group, plus every latency (and streamed TTFT) as text for exact percentiles in numpy.
_AGG = """
    count(*),
    count(error),
    coalesce(sum(prompt_tokens), 0),
    coalesce(sum(cached_prompt_tokens), 0),
    coalesce(sum(completion_tokens), 0),
    total(cost_usd),
    count(CASE WHEN cost_usd IS NULL AND prompt_tokens IS NOT NULL THEN 1 END),
    count(CASE WHEN stream = 1 THEN 1 END),
    count(CASE WHEN cache = 'hit' THEN 1 END),
    total(CASE WHEN cache = 'hit' THEN saved_usd END),
    count(CASE WHEN routed = 1 THEN 1 END),
    total(CASE WHEN routed = 1 THEN baseline_cost_usd - cost_usd END),
    total(CASE WHEN decision = 'route' AND routed IS NULL AND coalesce(cache, '') NOT IN ('hit', 'replay')
               THEN cost_usd - projected_cost_usd END),
    count(blocked_by),
    min(started_at),
    max(started_at),
    group_concat(latency_ms),
    group_concat(CASE WHEN stream = 1 THEN ttft_ms END)
"""
_AGG_FIELDS = (
    "requests errors prompt_tokens cached_prompt_tokens completion_tokens cost_usd unpriced streams "
    "cache_hits cache_saved_usd routed routed_saving_usd projected_saving_usd blocked"
).split()


def nearest_rank(sorted_values: np.ndarray, p: float) -> float | None:
    """The nearest-rank percentile: the value at rank ceil(p/100 · n) of the ascending values."""
    n = len(sorted_values)
    if n == 0:
        return None
    return float(sorted_values[max(1, math.ceil(p * n / 100)) - 1])


def _values(text: str | None) -> np.ndarray:
    # SQLite renders a REAL with 15 significant digits: exact for the ledger's millisecond values (3 decimals).
    return np.array(text.split(","), dtype=float) if text else np.empty(0)


def _finish(g: GroupStats, lat: np.ndarray, ttft: np.ndarray) -> None:
    if g.requests:
        g.error_rate = g.errors / g.requests
        g.cache_hit_rate = g.cache_hits / g.requests
    lat.sort()
    ttft.sort()
    for p in PERCENTILES:
        setattr(g, f"latency_p{p}_ms", nearest_rank(lat, p))
    for p in TTFT_PERCENTILES:
        setattr(g, f"ttft_p{p}_ms", nearest_rank(ttft, p))


def report(db: sqlite_utils.Database | sqlite3.Connection, since: str | None = None, by: str = "model") -> Report:
    """The report over flows started at or after `since` (an ISO UTC string from `parse_since`, or None)."""
    if by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}, not {by!r}")
    conn = _conn(db)
    source = _source(conn)
    until = iso_utc(dt.datetime.now(dt.UTC).timestamp()) or ""
    rows, daily_rows = _grouped_rows(conn, by, source, since)
    total = GroupStats("total")
    if not rows:
        return Report(by, since, until, None, None, total, [])

    # Rows are per (group, day, requested model): fold them into groups, and into the daily series.
    n = len(_AGG_FIELDS)
    cost_at = 3 + _AGG_FIELDS.index("cost_usd")
    acc: dict[Any, tuple[list[Any], list[str], list[str]]] = {}
    daily: dict[tuple[str, str], float] = {}
    first_at, last_at = min(r[n + 3] for r in rows), max(r[n + 4] for r in rows)
    for r in rows:
        sums, lats, ttfts = acc.setdefault(r[0], ([0] * n, [], []))
        for i in range(n):
            sums[i] += r[3 + i]
        if r[n + 5]:
            lats.append(r[n + 5])
        if r[n + 6]:
            ttfts.append(r[n + 6])
        if r[1] is not None:
            key = (r[1], NONE_LABEL if r[2] is None else r[2])
            daily[key] = daily.get(key, 0.0) + r[cost_at]

    groups: list[GroupStats] = []
    lat_all, ttft_all = [], []
    for grp, (sums, lats, ttfts) in acc.items():
        g = GroupStats(NONE_LABEL if grp is None else str(grp), **dict(zip(_AGG_FIELDS, sums)))
        lat, ttft = _values(",".join(lats)), _values(",".join(ttfts))
        lat_all.append(lat)
        ttft_all.append(ttft)
        for f, v in zip(_AGG_FIELDS, sums):
            setattr(total, f, getattr(total, f) + v)
        _finish(g, lat, ttft)
        groups.append(g)
    everything = np.concatenate(lat_all)
    hist = np.histogram(everything, bins=[0, *LATENCY_BUCKETS_MS, np.inf])[0]
    _finish(total, everything, np.concatenate(ttft_all))
    for g in groups:
        g.cost_share = g.cost_usd / total.cost_usd if total.cost_usd else 0.0
    total.cost_share = 1.0 if total.cost_usd else 0.0
    groups.sort(key=lambda g: g.group if by in ("day", "hour") else (-g.cost_usd, -g.requests, g.group))
    return Report(
        by, since, until, first_at, last_at, total, groups,
        daily_cost=daily_rows or [(d, m, c) for (d, m), c in sorted(daily.items())],
        latency_histogram=list(zip(bucket_labels(), (int(c) for c in hist))),
        quality_daily=quality_daily(conn, since),
    )  # fmt: skip


QUALITY_DAILY_SQL = """
select substr(started_at, 1, 10) as day, mode, count(*) as shadowed,
       count(case when verdict = 'pass' then 1 end) as passed, count(case when verdict = 'fail' then 1 end) as failed,
       count(case when verdict in ('tie', 'unknown') then 1 end) as undecided,
       sum(coalesce(cost_usd, 0) + coalesce(judge_cost_usd, 0)) as cost_usd
from shadow_evals where started_at >= ? group by day, mode order by day, mode
"""


def quality_daily(conn: sqlite3.Connection, since: str | None) -> list[dict[str, Any]]:
    """Shadow verdicts per day and mode (observe: would-route evidence; monitor: routed calls)."""
    try:
        cur = conn.execute(QUALITY_DAILY_SQL, [since or ""])
    except sqlite3.OperationalError:  # a ledger from before shadow evaluations (the central one always has it)
        return []
    cols = [d[0] for d in cur.description]
    out = []
    for r in cur.fetchall():
        row = dict(zip(cols, r))
        decided = (row["passed"] or 0) + (row["failed"] or 0)
        row["pass_rate"] = round(row["passed"] / decided, 4) if decided else None
        out.append(row)
    return out


PARALLEL_MIN_FLOWS = 50_000  # below this one pass on the caller's connection is quicker than two threads


def _grouped_rows(
    conn: sqlite3.Connection, by: str, source: str, since: str | None
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, float]]]:
    """The aggregate pass (rows of group, day, model, aggregates) and, when it cannot give it, the daily series.

    On a file ledger with many flows the period is cut in two at its median flow and the halves
    run on two more connections in parallel (SQLite releases the GIL while it works).
    """
    where, params = _where(since)
    path = ""  # the central ledger: one query, PostgreSQL parallelises it itself
    if isinstance(conn, sqlite3.Connection):
        path = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
    count = conn.execute(f"SELECT count(*) FROM {source} {where}", params).fetchone()[0]
    if count == 0:
        return [], []
    separate_daily = by not in ("model", "day", "hour")
    if not path or count < PARALLEL_MIN_FLOWS:
        rows = conn.execute(*_pass_sql(by, source, since, None)).fetchall()
        return rows, daily_cost(conn, since, source) if separate_daily else []
    mid = conn.execute(
        f"SELECT started_at FROM {source} {where} ORDER BY started_at LIMIT 1 OFFSET ?", [*params, count // 2]
    ).fetchone()[0]
    with ThreadPoolExecutor(3) as pool:
        halves = [pool.submit(_rows_at, path, *_pass_sql(by, source, lo, hi)) for lo, hi in ((since, mid), (mid, None))]
        daily = pool.submit(_daily_cost_at, path, since, source) if separate_daily else None
        return [row for half in halves for row in half.result()], daily.result() if daily else []


def _pass_sql(by: str, source: str, lo: str | None, hi: str | None) -> tuple[str, list[Any]]:
    conds, params = [], []
    if lo:
        conds.append("started_at >= ?")
        params.append(lo)
    if hi:
        conds.append("started_at < ?")
        params.append(hi)
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    # The daily series per model comes out of this pass when the grouping allows it cheaply:
    # by model, split each model by day; by day/hour, split by model. Other groupings (users,
    # keys: many groups) would multiply the groups by days × models, so they leave day and model NULL.
    if by == "model":
        extra, group_by = "substr(started_at, 1, 10) AS day, requested_model AS m", "grp, day"
    elif by in ("day", "hour"):
        extra, group_by = "substr(started_at, 1, 10) AS day, requested_model AS m", "grp, m"
    else:
        extra, group_by = "NULL AS day, NULL AS m", "grp"
    sql = f"SELECT {GROUPS[by]} AS grp, {extra}, {_AGG} FROM {source} {where} GROUP BY {group_by}"
    return sql, params


def _daily_cost_at(path: str, since: str | None, source: str) -> list[tuple[str, str, float]]:
    conn = sqlite3.connect(path, timeout=30)  # reads only
    try:
        return daily_cost(conn, since, source)
    finally:
        conn.close()


def _rows_at(path: str, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=30)  # reads only
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def daily_cost(conn: sqlite3.Connection, since: str | None, source: str = "flows") -> list[tuple[str, str, float]]:
    """(day, requested model, cost) for every day and model with flows, oldest first."""
    where, params = _where(since)
    sql = f"""SELECT substr(started_at, 1, 10) AS day, coalesce(requested_model, ?) AS m, total(cost_usd)
              FROM {source} {where} GROUP BY day, m ORDER BY day, m"""
    return [(d, m, c) for d, m, c in conn.execute(sql, [NONE_LABEL, *params])]


def bucket_labels() -> list[str]:
    """`<100ms`, `<250ms`, … `<30s`, `≥30s`: each bucket named by its upper bound."""
    fmt = lambda ms: f"{ms // 1000}s" if ms >= 1000 else f"{ms}ms"  # noqa: E731
    return [f"<{fmt(ms)}" for ms in LATENCY_BUCKETS_MS] + [f"≥{fmt(LATENCY_BUCKETS_MS[-1])}"]


def daily_totals(r: Report) -> list[tuple[str, float]]:
    """Total cost per day (every day between the first and the last, zero-filled) for sparklines."""
    per_day: dict[str, float] = {}
    for day, _, cost in r.daily_cost:
        per_day[day] = per_day.get(day, 0.0) + cost
    if not per_day:
        return []
    start, end = dt.date.fromisoformat(min(per_day)), dt.date.fromisoformat(max(per_day))
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    return [(d, per_day.get(d, 0.0)) for d in days]


# -- formatting shared by the terminal and HTML renderers ------------------------------------

SPARK = "▁▂▃▄▅▆▇█"


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "–"
    if v != 0 and abs(v) < 0.01:
        return f"${v:.4f}"
    return f"${v:,.2f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:.2f}s" if v >= 1000 else f"{v:.0f}ms"


def fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def fmt_int(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def sparkline(values: list[float]) -> str:
    """`▁▃█▅` — one character per value, scaled to the largest (all-zero gives the lowest bar)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


def bar(fraction: float, width: int = 10) -> str:
    """A text bar of `width` cells in eighths: `████▌     `."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")).ljust(width)


def period_text(r: Report) -> str:
    start = r.since[:16].replace("T", " ") if r.since else "the first flow"
    return f"{start} → {r.until[:16].replace('T', ' ')} UTC"


def headline(r: Report) -> str:
    t = r.total
    parts = [
        f"{t.requests:,} calls",
        f"{fmt_usd(t.cost_usd)}",
        f"{t.prompt_tokens:,}+{t.completion_tokens:,} tok",
        f"{t.errors:,} errors ({fmt_pct(t.error_rate)})",
        f"p50 {fmt_ms(t.latency_p50_ms)} · p95 {fmt_ms(t.latency_p95_ms)}",
    ]
    if t.cache_hits:
        parts.append(f"cache saved {fmt_usd(t.cache_saved_usd)}")
    if t.routed:
        parts.append(f"routing saved {fmt_usd(t.routed_saving_usd)}")
    if t.projected_saving_usd:
        parts.append(f"routing would save {fmt_usd(t.projected_saving_usd)}")
    if t.blocked:
        parts.append(f"{t.blocked:,} blocked")
    return " · ".join(parts)
