"""`turnout report`: per-group spend, errors, latency, cache and routing savings — SQL over the ledger.

Pure queries, no rendering (the terminal table is `turnout.addons.report_cmd`, the HTML page
`turnout.ledger.report_html`). Aggregates are one GROUP BY pass; percentiles are exact
nearest-rank values (the value at rank ceil(p/100 · n) in ascending order) picked by a window
function inside SQLite, so only a handful of rows ever reach Python.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlite_utils

from .store import iso_utc

# --by name → the SQL expression that names a row's group.
GROUPS: dict[str, str] = {
    "model": "requested_model",
    "provider": "provider",
    "feature": "feature",
    "team": "team",
    "user": "user",
    "key": "api_key_fp",
    "task": "task",
    "day": "substr(started_at, 1, 10)",
    "hour": "substr(started_at, 1, 13) || ':00Z'",
}
NONE_LABEL = "(none)"
PERCENTILES = (50, 95, 99)
TTFT_PERCENTILES = (50, 95)
# Upper bounds (ms) of the latency histogram's buckets; the last bucket is open-ended.
LATENCY_BUCKETS_MS = (100, 250, 500, 1000, 2000, 5000, 10000, 30000)

_SINCE_REL = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.I)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | None, *, now: float | None = None) -> str | None:
    """`7d`, `24h`, `30m`, `2w` or a date/time `2026-11-01[T12:00]` (UTC) to the ledger's timestamp format.

    None or "" or "all" means the whole ledger (returns None). Raises ValueError on anything else.
    """
    if value is None or value.strip().lower() in ("", "all"):
        return None
    now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    m = _SINCE_REL.match(value)
    if m:
        amount, unit = int(m.group(1)), m.group(2).lower()
        if amount <= 0:
            raise ValueError(f"--since must be a positive duration, not {value!r}")
        return iso_utc(now - amount * _UNIT_SECONDS[unit])
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


def _where(since: str | None) -> tuple[str, list[Any]]:
    return ("WHERE started_at >= ?", [since]) if since else ("", [])


def _rank_filter(column: str, ps: tuple[int, ...]) -> str:
    # nearest rank: ceil(p/100 · n) in integer arithmetic
    return " OR ".join(f"rn = (n * {p} + 99) / 100" for p in ps)


def percentiles(
    conn: sqlite3.Connection, group_sql: str, value: str, ps: tuple[int, ...], since: str | None, extra: str = ""
) -> dict[str | None, dict[int, float]]:
    """{group: {p: value}} with exact nearest-rank percentiles of `value`, computed in SQLite."""
    where, params = _where(since)
    cond = f"{value} IS NOT NULL" + (f" AND {extra}" if extra else "")
    where = f"{where} AND {cond}" if where else f"WHERE {cond}"
    sql = f"""
        SELECT grp, n, rn, v FROM (
            SELECT {group_sql} AS grp, {value} AS v,
                   row_number() OVER (PARTITION BY {group_sql} ORDER BY {value}) AS rn,
                   count(*) OVER (PARTITION BY {group_sql}) AS n
            FROM flows {where}
        ) WHERE {_rank_filter(value, ps)}
    """
    out: dict[str | None, dict[int, float]] = {}
    for grp, n, rn, v in conn.execute(sql, params):
        for p in ps:
            if rn == (n * p + 99) // 100:
                out.setdefault(grp, {})[p] = v
    return out


_AGG = """
    count(*),
    coalesce(sum(error IS NOT NULL), 0),
    coalesce(sum(prompt_tokens), 0),
    coalesce(sum(cached_prompt_tokens), 0),
    coalesce(sum(completion_tokens), 0),
    total(cost_usd),
    coalesce(sum(cost_usd IS NULL AND prompt_tokens IS NOT NULL), 0),
    coalesce(sum(stream = 1), 0),
    coalesce(sum(cache = 'hit'), 0),
    total(CASE WHEN cache = 'hit' THEN saved_usd END),
    coalesce(sum(routed = 1), 0),
    total(CASE WHEN routed = 1 THEN baseline_cost_usd - cost_usd END),
    total(CASE WHEN decision = 'route' AND routed IS NULL THEN cost_usd - projected_cost_usd END),
    coalesce(sum(blocked_by IS NOT NULL), 0),
    min(started_at),
    max(started_at)
"""
_AGG_FIELDS = (
    "requests errors prompt_tokens cached_prompt_tokens completion_tokens cost_usd unpriced streams "
    "cache_hits cache_saved_usd routed routed_saving_usd projected_saving_usd blocked"
).split()


def _stats(group: str, values: tuple[Any, ...]) -> GroupStats:
    g = GroupStats(group, **dict(zip(_AGG_FIELDS, values)))
    if g.requests:
        g.error_rate = g.errors / g.requests
        g.cache_hit_rate = g.cache_hits / g.requests
    return g


def _apply_percentiles(g: GroupStats, lat: dict[int, float] | None, ttft: dict[int, float] | None) -> None:
    for p, v in (lat or {}).items():
        setattr(g, f"latency_p{p}_ms", v)
    for p, v in (ttft or {}).items():
        setattr(g, f"ttft_p{p}_ms", v)


def report(db: sqlite_utils.Database | sqlite3.Connection, since: str | None = None, by: str = "model") -> Report:
    """The report over flows started at or after `since` (an ISO UTC string from `parse_since`, or None)."""
    if by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}, not {by!r}")
    conn = _conn(db)
    gsql = GROUPS[by]
    where, params = _where(since)
    until = iso_utc(dt.datetime.now(dt.UTC).timestamp()) or ""

    rows = conn.execute(f"SELECT {gsql} AS grp, {_AGG} FROM flows {where} GROUP BY grp", params).fetchall()
    total = _stats("total", conn.execute(f"SELECT {_AGG} FROM flows {where}", params).fetchone()[:-2])
    first_at, last_at = (rows and min(r[-2] for r in rows)) or None, (rows and max(r[-1] for r in rows)) or None
    if total.requests == 0:
        return Report(by, since, until, None, None, total, [])

    lat = percentiles(conn, gsql, "latency_ms", PERCENTILES, since)
    ttft = percentiles(conn, gsql, "ttft_ms", TTFT_PERCENTILES, since, "stream = 1")
    lat_all = percentiles(conn, "'*'", "latency_ms", PERCENTILES, since)
    ttft_all = percentiles(conn, "'*'", "ttft_ms", TTFT_PERCENTILES, since, "stream = 1")
    _apply_percentiles(total, lat_all.get("*"), ttft_all.get("*"))

    groups = []
    for r in rows:
        g = _stats(NONE_LABEL if r[0] is None else str(r[0]), r[1:-2])
        _apply_percentiles(g, lat.get(r[0]), ttft.get(r[0]))
        g.cost_share = g.cost_usd / total.cost_usd if total.cost_usd else 0.0
        groups.append(g)
    total.cost_share = 1.0 if total.cost_usd else 0.0
    groups.sort(key=lambda g: g.group if by in ("day", "hour") else (-g.cost_usd, -g.requests, g.group))

    return Report(
        by, since, until, first_at, last_at, total, groups,
        daily_cost=daily_cost(conn, since),
        latency_histogram=latency_histogram(conn, since),
    )  # fmt: skip


def daily_cost(conn: sqlite3.Connection, since: str | None) -> list[tuple[str, str, float]]:
    """(day, requested model, cost) for every day and model with flows, oldest first."""
    where, params = _where(since)
    sql = f"""SELECT substr(started_at, 1, 10) AS day, coalesce(requested_model, ?) AS m, total(cost_usd)
              FROM flows {where} GROUP BY day, m ORDER BY day, m"""
    return [(d, m, c) for d, m, c in conn.execute(sql, [NONE_LABEL, *params])]


def bucket_labels() -> list[str]:
    edges = [0, *LATENCY_BUCKETS_MS]
    fmt = lambda ms: f"{ms // 1000}s" if ms >= 1000 else f"{ms}ms"  # noqa: E731
    return [f"{fmt(lo)}–{fmt(hi)}" for lo, hi in zip(edges, edges[1:])] + [f"≥{fmt(edges[-1])}"]


def latency_histogram(conn: sqlite3.Connection, since: str | None) -> list[tuple[str, int]]:
    """Flows per latency bucket (LATENCY_BUCKETS_MS), every bucket present, fastest first."""
    where, params = _where(since)
    cond = "latency_ms IS NOT NULL"
    where = f"{where} AND {cond}" if where else f"WHERE {cond}"
    case = " ".join(f"WHEN latency_ms < {ms} THEN {i}" for i, ms in enumerate(LATENCY_BUCKETS_MS))
    sql = f"SELECT CASE {case} ELSE {len(LATENCY_BUCKETS_MS)} END AS b, count(*) FROM flows {where} GROUP BY b"
    counts = dict(conn.execute(sql, params).fetchall())
    return [(label, counts.get(i, 0)) for i, label in enumerate(bucket_labels())]


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
