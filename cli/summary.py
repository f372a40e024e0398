"""The short summary `turnout run` prints when its command ends."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from turnout.ledger.store import iso_utc, open_ledger


def print_run_summary(db_path: str, *, since: float, replay: bool = False) -> int:
    """Summarise the flows recorded since `since`; returns 1 when replay had misses, else 0."""
    console = Console(stderr=True, highlight=False)
    if not Path(db_path).exists():
        console.print("turnout: no LLM calls recorded")
        return 0
    db = open_ledger(db_path)
    start = iso_utc(since)
    row = db.execute(
        """select count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
                  sum(cost_usd), sum(error is not null), sum(cost_usd is null and prompt_tokens is not null)
           from flows where started_at >= ? and origin is null""",
        [start],
    ).fetchone()
    flows, prompt, completion, cost, errors, unpriced = row
    if not flows:
        console.print("turnout: no LLM calls recorded")
        db.conn.close()
        return 0
    cost_text = f"${cost:.4f}" if cost is not None else "$?"
    line = f"turnout: {flows} LLM call(s) · {prompt}+{completion} tokens · {cost_text}"
    if errors:
        line += f" · {errors} error(s)"
    if unpriced:
        line += f" · {unpriced} unpriced"
    console.print(line)
    own, own_cost = db.execute(
        "select count(*), coalesce(sum(cost_usd), 0) from flows where started_at >= ? and origin is not null", [start]
    ).fetchone()
    if own:
        console.print(f"turnout: and {own} shadow/judge call(s) of its own (quality evidence) · ${own_cost:.4f}")
    misses = 0
    if replay and "cache" in {c.name for c in db["flows"].columns}:
        rows = db.execute(
            "select path, requested_model, error from flows where started_at >= ? and cache = 'replay-miss' order by started_at",
            [start],
        ).fetchall()
        misses = len(rows)
        for path, model, error in rows:
            console.print(f"  replay miss: {path} {model or ''}: {error}")
    db.conn.close()
    sys.stderr.flush()
    return 1 if misses else 0
