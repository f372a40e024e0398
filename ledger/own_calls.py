"""Ledger rows for turnout's own provider calls (shadows, judges): spend that is visible, never a user's.

Each is a `flows` row like any other — provider, model, tokens, cost, latency — with `origin` set
(`shadow` | `judge`) and `feature` = `turnout:shadow` / `turnout:judge`, so reports show what
quality evidence costs and budgets (which skip `origin` rows) never count it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from .pricing import Usage
from .store import iso_utc


def own_call_row(
    *,
    origin: str,
    provider: str,
    endpoint: str,
    host: str,
    path: str,
    model: str,
    started: float,
    latency_ms: float,
    status: int | None,
    sent: Any,
    answer: Any,
    error: str | None,
    usage: Usage | None,
    cost_usd: float | None,
    response_model: str | None,
    finish_reason: str | None,
    api_key_fp: str | None,
    team: str | None,
    store_bodies: bool,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"turnout-{origin}-{uuid.uuid4()}",
        "started_at": iso_utc(started),
        "ended_at": iso_utc(started + latency_ms / 1000),
        "origin": origin,
        "provider": provider,
        "endpoint": endpoint,
        "host": host,
        "method": "POST",
        "path": path,
        "requested_model": model,
        "model": model,
        "stream": 0,
        "status_code": status,
        "latency_ms": round(latency_ms, 3),
        "api_key_fp": api_key_fp,
        "feature": f"turnout:{origin}",
        "team": team,
        "error": error,
        "response_model": response_model,
        "finish_reason": finish_reason,
        "cost_usd": cost_usd,
        "request_body": json.dumps(sent, ensure_ascii=False) if store_bodies else None,
        "response_body": json.dumps(answer, ensure_ascii=False) if store_bodies and answer is not None else None,
    }
    if usage is not None:
        row.update(usage._asdict())
        row["total_tokens"] = usage.prompt_tokens + usage.completion_tokens
    return row
