"""Batch classification: JSON lines in, one decision dict per line out.

Accepts OpenAI request bodies or bare ``{"messages": ...}`` records such as
the training data (extra fields like ``id``/``source`` are ignored; ``id`` is
passed through). A record without ``model`` is scored as if it asked for the
policy's ``default_model``, so datasets can be classified as they are. Output
order and count match the input; a bad line yields ``{"error": ...}`` instead
of stopping the batch.

Feed it a file object (or ``str.split("\n")``), not ``str.splitlines()``:
prompts may contain U+2028/U+2029, which ``splitlines`` treats as line breaks.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from .policy import RoutingPolicy


def classify_record(record: Any, policy: RoutingPolicy, *, provider: str = "openai") -> dict[str, Any]:
    if not isinstance(record, dict):
        return {"error": f"expected a JSON object, got {type(record).__name__}"}
    body = record if isinstance(record.get("model"), str) else {**record, "model": policy.default_model}
    d = policy.decide(body, provider=provider)
    out: dict[str, Any] = {}
    if "id" in record:
        out["id"] = record["id"]
    out.update(
        model=body["model"],
        task=d.task,
        score=None if d.score is None else round(d.score, 4),
        decision=d.decision,
        would_route_to=d.would_route_to,
        reason=d.reason,
    )
    return out


def classify_records(
    lines: Iterable[str], policy: RoutingPolicy, *, provider: str = "openai"
) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            yield {"error": f"line {lineno}: invalid JSON ({exc})"}
            continue
        out = classify_record(record, policy, provider=provider)
        if "error" in out:
            out["error"] = f"line {lineno}: {out['error']}"
        yield out
