"""The decision report: what routing would save, from real usage priced on both models, and at what
measured quality — shadow evaluations (`shadow_evals`) per group, with a Wilson lower bound and a
recommendation against the target quality.

`all_calls` / `all_cost_usd` count the clients' calls only; turnout's own shadow and judge calls
(`origin` set) are shown apart as the evidence's cost.
"""

from __future__ import annotations

import time
from typing import Any

from turnout.router.policy import DEFAULT_TARGET_QUALITY
from turnout.router.quality import recommend, wilson

from .report import parse_since
from .store import iso_utc, open_reader, parse_iso


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
  and origin is null
group by requested_model, would_route_to, coalesce(task, '?')
order by saving_usd desc nulls last, calls desc
"""

ROUTED_SQL = """
select count(*), sum(baseline_cost_usd), sum(cost_usd) from flows
where routed = 1 and started_at >= ?
"""


# Observe-mode verdicts per group key: decided = pass + fail; ties and unknowns are no evidence.
EVIDENCE_SQL = """
select {key}, count(*) as shadowed,
       count(case when se.verdict = 'pass' then 1 end) as passed,
       count(case when se.verdict = 'fail' then 1 end) as failed,
       count(case when se.verdict = 'tie' then 1 end) as ties,
       count(case when se.verdict = 'unknown' then 1 end) as unknown,
       sum(coalesce(se.cost_usd, 0) + coalesce(se.judge_cost_usd, 0)) as evidence_cost_usd
from shadow_evals se join flows f on f.id = se.flow_id
where se.mode = 'observe' and se.decision = ? and f.started_at >= ?
group by {group}
"""

BY_SQL = """
select {column} as {name}, {extra} count(*) as calls, sum(cost_usd) - sum(projected_cost_usd) as saving_usd
from flows
where decision = 'route' and routed is null and started_at >= ? and coalesce(cache, '') not in ('hit', 'replay')
  and origin is null
group by {column}
order by saving_usd desc nulls last, calls desc
"""

PAIR = "f.requested_model as requested_model, se.candidate_model as candidate_model, coalesce(f.task, '?') as task"
PAIR_GROUP = "f.requested_model, se.candidate_model, coalesce(f.task, '?')"


def _query(db: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = db.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _evidence(db: Any, key: str, group: str, decision: str, start: str) -> list[dict[str, Any]]:
    return _query(db, EVIDENCE_SQL.format(key=key, group=group), [decision, start])


def _quality(row: dict[str, Any], e: dict[str, Any], target: float, per_month: float) -> None:
    """Add a group's evidence `e`, its bound and recommendation, and its saving per month, to `row`."""
    passed, failed = int(e.get("passed") or 0), int(e.get("failed") or 0)
    decided = passed + failed
    row.update(
        shadowed=int(e.get("shadowed") or 0),
        passed=passed,
        failed=failed,
        ties=int(e.get("ties") or 0),
        unknown=int(e.get("unknown") or 0),
        pass_rate=round(passed / decided, 4) if decided else None,
        pass_rate_low=round(wilson(passed, decided)[0], 4) if decided else None,
        recommendation=recommend(passed, decided, target),
        evidence_cost_usd=e.get("evidence_cost_usd") or 0.0,
    )
    if "saving_usd" in row:
        row["saving_per_month_usd"] = round((row["saving_usd"] or 0.0) * per_month, 6)


def savings(
    db_path: str, since: str, *, target_quality: float = DEFAULT_TARGET_QUALITY, now: float | None = None
) -> dict[str, Any]:
    """Per group (model pair x task, feature, template): what routing would save, and at what measured quality."""
    now = time.time() if now is None else now
    start = parse_since(since) or "0"
    db = open_reader(db_path)
    rows = _query(db, SAVINGS_SQL, [start])
    first = db.execute(
        "select min(started_at) from flows where started_at >= ? and origin is null", [start]
    ).fetchone()[0]
    begin = parse_iso(start) if start != "0" else (parse_iso(first) if first else now)
    days = max(1.0, (now - begin) / 86400)  # a window shorter than a day counts as one day
    per_month = 30.0 / days
    pairs = {
        (e["requested_model"], e["candidate_model"], e["task"]): e
        for e in _evidence(db, PAIR, PAIR_GROUP, "route", start)
    }
    for r in rows:
        _quality(r, pairs.get((r["requested_model"], r["would_route_to"], r["task"]), {}), target_quality, per_month)
    explored = _evidence(db, PAIR, PAIR_GROUP, "keep", start)  # the kept side of the threshold
    for r in explored:
        _quality(r, dict(r), target_quality, per_month)
    feature = "coalesce(f.feature, '(untagged)')"
    by_feature = _query(db, BY_SQL.format(column="coalesce(feature, '(untagged)')", name="feature", extra=""), [start])
    ev = {e["feature"]: e for e in _evidence(db, f"{feature} as feature", feature, "route", start)}
    for r in by_feature:
        _quality(r, ev.get(r["feature"], {}), target_quality, per_month)
    by_template = _query(
        db,
        BY_SQL.format(column="template_fp", name="template_fp", extra="max(template_name) as template_name,"),
        [start],
    )
    ev = {e["template_fp"]: e for e in _evidence(db, "f.template_fp as template_fp", "f.template_fp", "route", start)}
    for r in by_template:
        _quality(r, ev.get(r["template_fp"], {}), target_quality, per_month)
    own = db.execute(
        "select count(*), coalesce(sum(cost_usd), 0) from flows where origin is not null and started_at >= ?", [start]
    ).fetchone()
    total_calls = db.execute(
        "select count(*), sum(cost_usd) from flows where started_at >= ? and origin is null", [start]
    ).fetchone()
    routed = db.execute(ROUTED_SQL, [start]).fetchone()
    hits = db.execute(
        "select count(*) from flows where decision = 'route' and routed is null and started_at >= ? "
        "and cache in ('hit', 'replay') and origin is null",
        [start],
    ).fetchone()[0]
    db.close()
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
    cleared = [r for r in rows if r["recommendation"] == "route"]
    quality = {
        "target_quality": target_quality,
        "window_days": round(days, 3),
        "shadowed": sum(r["shadowed"] for r in rows),
        "groups": len(rows),
        "groups_cleared": len(cleared),
        # per month at this window's rate: routing only the groups whose measured quality clears the target,
        # and routing everything the router picks
        "saving_per_month_cleared_usd": round(sum(r["saving_per_month_usd"] for r in cleared), 6),
        "saving_per_month_all_usd": round(sum(r["saving_per_month_usd"] for r in rows), 6),
        "evidence_calls": own[0],
        "evidence_cost_usd": own[1],
        "as_of": iso_utc(now),
    }
    return {
        "since": since,
        "groups": rows,
        "totals": totals,
        "quality": quality,
        "explored": explored,
        "by_feature": by_feature,
        "by_template": by_template,
    }


WHAT_IF_SQL = """
select provider, request_body, requested_model, coalesce(task, '?'), decision, cost_usd,
       prompt_tokens, cached_prompt_tokens, completion_tokens, reasoning_tokens, cache_write_tokens, api_key_fp, feature, template_fp
from flows
where origin is null and routed is null and decision in ('route', 'keep') and request_body is not null
  and started_at >= ? and coalesce(cache, '') not in ('hit', 'replay') and prompt_tokens is not null
"""


def what_if(db_path: str, since: str, policy: Any, prices: Any) -> dict[str, Any]:
    """What `policy` (say, a model trained with `turnout train --from-ledger`) would have decided on the
    observed traffic, next to what the router decided then: calls routed, and the saving on their real usage."""
    import json

    from .pricing import Usage

    start = parse_since(since) or "0"
    db = open_reader(db_path)
    try:
        rows = db.execute(WHAT_IF_SQL, [start]).fetchall()
    finally:
        db.close()
    tasks: dict[str, dict[str, Any]] = {}
    totals = {
        "calls": 0,
        "route_before": 0,
        "route_now": 0,
        "changed": 0,
        "saving_before_usd": 0.0,
        "saving_now_usd": 0.0,
    }
    for provider, body_text, requested, task, decision, cost, *usage_cols, key_fp, feature, template in rows:
        try:
            body = json.loads(body_text)
        except (TypeError, ValueError):
            continue
        d = policy.decide(
            body, provider=provider, api_key_fp=key_fp, feature=feature, model=requested, template=template
        )
        usage = Usage(*(int(v or 0) for v in usage_cols))
        cheaper = d.would_route_to or d.candidate
        projected = prices.cost(provider, cheaper, usage) if cheaper else None
        saving = (cost - projected) if cost is not None and projected is not None else 0.0
        t = tasks.setdefault(
            d.task, {"task": d.task, "calls": 0, "route_before": 0, "route_now": 0, "saving_now_usd": 0.0}
        )
        t["calls"] += 1
        totals["calls"] += 1
        before, now = decision == "route", d.decision == "route"
        t["route_before"] += before
        t["route_now"] += now
        totals["route_before"] += before
        totals["route_now"] += now
        totals["changed"] += before != now
        if before:
            totals["saving_before_usd"] += saving
        if now:
            totals["saving_now_usd"] += saving
            t["saving_now_usd"] += saving
    return {"totals": totals, "by_task": sorted(tasks.values(), key=lambda t: -t["calls"])}
