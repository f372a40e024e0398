"""`turnout run`'s summary counts the command's calls, and turnout's own shadow and judge calls apart."""

from __future__ import annotations

import time

from turnout.cli.summary import print_run_summary
from turnout.ledger.store import iso_utc, open_ledger


def test_own_calls_are_counted_apart(tmp_path, capsys):
    db_path = tmp_path / "run.db"
    db = open_ledger(db_path)
    now = time.time()
    row = {"started_at": iso_utc(now), "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": 0.001}
    db["flows"].insert_all(
        [{**row, "id": "a"}, {**row, "id": "b"}, {**row, "id": "s", "origin": "shadow", "cost_usd": 0.0002}]
    )
    db.conn.commit()
    db.conn.close()
    assert print_run_summary(str(db_path), since=now - 1) == 0
    err = capsys.readouterr().err
    assert "turnout: 2 LLM call(s) · 20+4 tokens · $0.0020" in err
    assert "turnout: and 1 shadow/judge call(s) of its own (quality evidence) · $0.0002" in err
