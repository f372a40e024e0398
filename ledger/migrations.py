"""Schema migrations, applied in order and recorded by name (the `llm` pattern).

A released migration is never edited: schema changes are new functions appended to
MIGRATIONS. Each one runs inside a transaction together with its bookkeeping row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_flows(db: sqlite_utils.Database) -> None:
    db["flows"].create(
        {
            "id": str,  # mitmproxy's flow id: the same flow is findable in mitmweb
            "started_at": str,  # ISO 8601 UTC, millisecond precision, 'Z' suffix
            "ended_at": str,
            "provider": str,
            "endpoint": str,  # chat | responses | embeddings | completions | NULL (not parsed)
            "host": str,
            "method": str,
            "path": str,
            "status_code": int,
            "requested_model": str,  # what the client asked for
            "model": str,  # what was sent upstream
            "response_model": str,  # what the provider says answered
            "stream": int,
            "prompt_tokens": int,
            "cached_prompt_tokens": int,
            "completion_tokens": int,
            "reasoning_tokens": int,
            "total_tokens": int,
            "cost_usd": float,  # NULL when the model has no known price, never a guess
            "latency_ms": float,
            "ttft_ms": float,  # time to the first streamed byte of the answer
            "api_key_fp": str,  # sha256 prefix + last 4 characters, never the key
            "user": str,
            "client_addr": str,
            "finish_reason": str,
            "error": str,
            "request_body": str,
            "response_body": str,
        },
        pk="id",
    )
    db["flows"].create_index(["started_at"])
    db["flows"].create_index(["requested_model", "started_at"])
    db["flows"].create_index(["api_key_fp", "started_at"])


@migration
def m002_events(db: sqlite_utils.Database) -> None:
    """Things that happened to the proxy rather than to one flow: alerts, ledger trouble."""
    db["events"].create(
        {"id": int, "at": str, "kind": str, "flow_id": str, "message": str, "data": str},
        pk="id",
    )
    db["events"].create_index(["at"])


@migration
def m003_routing(db: sqlite_utils.Database) -> None:
    """The router's decision per flow; projected (observe) and baseline (requested-model) costs for savings."""
    flows = db["flows"]
    for name, kind in [
        ("task", str),
        ("score", float),
        ("decision", str),
        ("would_route_to", str),
        ("route_reason", str),
        ("routed", int),
        ("projected_cost_usd", float),
        ("baseline_cost_usd", float),
    ]:
        flows.add_column(name, kind)
    flows.create_index(["task"])


@migration
def m004_cache(db: sqlite_utils.Database) -> None:
    """Cache status per flow (hit | miss | bypass | replay-miss) and what a hit saved."""
    flows = db["flows"]
    flows.add_column("cache", str)
    flows.add_column("saved_usd", float)
    flows.add_column("cache_key", str)
    db["cache_entries"].create(
        {
            "key": str,  # sha256 of the canonical request + tenant scope
            "scope": str,  # whose answers these are: an API key fingerprint, or a shared scope name
            "endpoint": str,
            "model": str,  # the model actually sent upstream
            "canonical": str,  # the canonical request (JSON) the key was made from: for diffs on a miss
            "response_body": str,  # the full (assembled, for streams) JSON answer
            "response_headers": str,
            "status_code": int,
            "cost_usd": float,  # what the original call cost: the saving of each hit
            "flow_id": str,
            "created_at": str,
            "last_hit_at": str,
            "hits": int,
            "size": int,
        },
        pk="key",
    )
    db["cache_entries"].create_index(["last_hit_at"])
    db["cache_entries"].create_index(["scope", "endpoint", "model"])


@migration
def m005_attribution(db: sqlite_utils.Database) -> None:
    """Who and what a flow is for, and what the budgets and breakers did to it."""
    flows = db["flows"]
    for name, kind in [
        ("feature", str),
        ("team", str),
        ("project", str),  # OpenAI-Project header
        ("organization", str),  # OpenAI-Organization header
        ("template_fp", str),  # fingerprint of the prompt template (system prompt + fixed text)
        ("template_name", str),  # readable name from the template's first words
        ("blocked_by", str),  # budget:<name> | loop | spike | ledger — the flow never reached the provider
        ("clamped", str),  # e.g. "max_tokens 100000→4096"
        ("budget_alerts", str),
    ]:
        flows.add_column(name, kind)
    flows.create_index(["feature", "started_at"])
    flows.create_index(["team", "started_at"])
    flows.create_index(["template_fp"])


@migration
def m006_reports(db: sqlite_utils.Database) -> None:
    """`turnout report`'s covering index, and the `flows_summary` view for Datasette / sqlite-utils.

    The index holds every column a report reads, led by started_at: a report over a period is one
    range scan of the index and never touches the wide rows with their stored bodies.
    """
    db.execute(
        """CREATE INDEX IF NOT EXISTS idx_flows_report ON flows (
            started_at, requested_model, provider, feature, team, user, api_key_fp, task, error,
            prompt_tokens, cached_prompt_tokens, completion_tokens, cost_usd, latency_ms, ttft_ms, stream,
            cache, saved_usd, routed, baseline_cost_usd, decision, projected_cost_usd, blocked_by)"""
    )
    # flows_summary: one row per flow without the bodies, plus
    #   day        the UTC day the flow started (YYYY-MM-DD)
    #   ok         1 when the flow has no error
    #   tokens     prompt + completion tokens
    #   saved_usd  what the flow saved: a cache hit's saved_usd, or (routed) baseline - actual cost
    #   projected_saving_usd  observe mode: cost - projected cost where the router would have routed
    db.execute(
        """CREATE VIEW IF NOT EXISTS flows_summary AS
        SELECT id, started_at, substr(started_at, 1, 10) AS day, provider, endpoint, requested_model, model,
               response_model, stream, status_code, error IS NULL AS ok, error, prompt_tokens, cached_prompt_tokens,
               completion_tokens, coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) AS tokens, cost_usd,
               latency_ms, ttft_ms, api_key_fp, user, feature, team, project, task, decision, would_route_to, routed,
               cache, blocked_by,
               CASE WHEN cache = 'hit' THEN saved_usd
                    WHEN routed = 1 THEN baseline_cost_usd - cost_usd END AS saved_usd,
               CASE WHEN decision = 'route' AND routed IS NULL THEN cost_usd - projected_cost_usd END
                   AS projected_saving_usd
        FROM flows"""
    )


@migration
def m007_cache_write_tokens(db: sqlite_utils.Database) -> None:
    """Prompt tokens written to the provider's prompt cache (Anthropic bills them above input)."""
    db["flows"].add_column("cache_write_tokens", int)


@migration
def m008_usage_estimated(db: sqlite_utils.Database) -> None:
    """1 where the tokens are turnout's count, not the provider's: a stream cut off before its usage came."""
    db["flows"].add_column("usage_estimated", int)


@migration
def m009_summary_usage(db: sqlite_utils.Database) -> None:
    """`flows_summary` again, now with the usage columns added since m006 (and reasoning_tokens)."""
    db.execute("DROP VIEW IF EXISTS flows_summary")
    db.execute(
        """CREATE VIEW flows_summary AS
        SELECT id, started_at, substr(started_at, 1, 10) AS day, provider, endpoint, requested_model, model,
               response_model, stream, status_code, error IS NULL AS ok, error, prompt_tokens, cached_prompt_tokens,
               cache_write_tokens, completion_tokens, reasoning_tokens,
               coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) AS tokens, usage_estimated, cost_usd,
               latency_ms, ttft_ms, api_key_fp, user, feature, team, project, task, decision, would_route_to, routed,
               cache, blocked_by,
               CASE WHEN cache = 'hit' THEN saved_usd
                    WHEN routed = 1 THEN baseline_cost_usd - cost_usd END AS saved_usd,
               CASE WHEN decision = 'route' AND routed IS NULL THEN cost_usd - projected_cost_usd END
                   AS projected_saving_usd
        FROM flows"""
    )


def applied(db: sqlite_utils.Database) -> set[str]:
    if "_turnout_migrations" not in db.table_names():
        return set()
    return {row["name"] for row in db["_turnout_migrations"].rows}


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Bring `db` up to date; return the names of the migrations that ran."""
    db["_turnout_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
    done = applied(db)
    ran = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db.conn:
            fn(db)
            db["_turnout_migrations"].insert(
                {"name": fn.__name__, "applied_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            )
        ran.append(fn.__name__)
    return ran


@migration
def m010_team_source(db: sqlite_utils.Database) -> None:
    """Which source named the flow's team (key label, config rule, client header, body): only the first
    two are the config's word, and team-scoped caching trusts only those (or headers, when trusted)."""
    db["flows"].add_column("team_source", str)


@migration
def m011_shadow_evals(db: sqlite_utils.Database) -> None:
    """Shadow evaluations (issue 15): one row per comparison of a cheaper (or, monitoring, the requested)
    model's answer with the one the client got; `flows.origin` marks turnout's own calls (shadows and
    judges), which no user budget counts."""
    db["flows"].add_column("origin", str)
    db["shadow_evals"].create(
        {
            "id": int,
            "flow_id": str,
            "started_at": str,
            "mode": str,  # observe | monitor
            "decision": str,  # the router's decision for the shadowed call: route | keep (explore)
            "provider": str,
            "reference_model": str,
            "candidate_model": str,
            "task": str,
            "feature": str,
            "template_fp": str,
            "comparator": str,
            "verdict": str,  # pass | fail | tie | unknown
            "detail": str,
            "candidate_response": str,
            "cost_usd": float,
            "judge_cost_usd": float,
            "latency_ms": float,
            "judge": str,  # the judge prompt's version, when a judge decided
        },
        pk="id",
    )
    db["shadow_evals"].create_index(["flow_id"])
    db["shadow_evals"].create_index(["started_at"])
    db["flows"].create_index(["origin"])


@migration
def m012_failover(db: sqlite_utils.Database) -> None:
    """Failover (issue 17): a call another provider answered keeps what was asked (`failover_from`,
    provider:model), why it moved (`failover_reason`) and every target tried (`failover_tried`)."""
    db["flows"].add_column("failover_from", str)
    db["flows"].add_column("failover_reason", str)
    db["flows"].add_column("failover_tried", str)
    db["flows"].create_index(["failover_from"])
