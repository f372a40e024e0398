"""The observation report: what routing would have saved, from real usage priced on both models."""

from __future__ import annotations

from typing import Any

from .report import parse_since
from .store import open_ledger

SAVINGS_SQL = """
select requested_model, would_route_to, coalesce(task, '?') as task,
       count(*) as calls,
       avg(score) as mean_score,
       sum(cost_usd) as cost_usd,
       sum(projected_cost_usd) as projected_cost_usd,
       sum(cost_usd) - sum(projected_cost_usd) as saving_usd,
       sum(case when cost_usd is null or projected_cost_usd is null then 1 else 0 end) as unpriced
from flows
where decision = 'route' and routed is null and started_at >= ? and coalesce(cache, '') not in ('hit', 'replay')
group by requested_model, would_route_to, task
order by saving_usd desc nulls last, calls desc
"""

ROUTED_SQL = """
select count(*), sum(baseline_cost_usd), sum(cost_usd) from flows
where routed = 1 and started_at >= ?
"""


def savings(db_path: str, since: str) -> dict[str, Any]:
    """The observation report: what routing would have saved, from real usage priced on both models."""
    start = parse_since(since) or "0"
    db = open_ledger(db_path)
    cur = db.execute(SAVINGS_SQL, [start])
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    total_calls = db.execute("select count(*), sum(cost_usd) from flows where started_at >= ?", [start]).fetchone()
    routed = db.execute(ROUTED_SQL, [start]).fetchone()
    hits = db.execute(
        "select count(*) from flows where decision = 'route' and routed is null and started_at >= ? "
        "and cache in ('hit', 'replay')",
        [start],
    ).fetchone()[0]
    db.conn.close()
    totals = {
        "calls": sum(r["calls"] for r in rows),
        "cost_usd": sum(r["cost_usd"] or 0 for r in rows),
        "projected_cost_usd": sum(r["projected_cost_usd"] or 0 for r in rows),
        "saving_usd": sum(r["saving_usd"] or 0 for r in rows),
        "all_calls": total_calls[0],
        "all_cost_usd": total_calls[1] or 0.0,
        "cache_hits": hits,  # would-route calls answered from the cache: free either way, so not counted above
        "routed_calls": routed[0],
        "realised_saving_usd": (routed[1] or 0.0) - (routed[2] or 0.0),
    }
    return {"since": since, "groups": rows, "totals": totals}
