"""The central ledger's parts on real SQLite and a real PostgreSQL: the outbox's triggers, the shipper's
at-least-once delivery made exactly-once by the upsert, and the report SQL on both engines."""

from __future__ import annotations

import sqlite3
import time

import pytest

from turnout.ledger import outbox, postgres
from turnout.ledger.report import report
from turnout.ledger.shipper import Shipper
from turnout.ledger.store import open_ledger, open_reader


def _flow(i: int, **kw) -> dict:
    row = {
        "id": f"flow-{i:04d}", "started_at": f"2026-11-{1 + i % 28:02d}T10:00:{i % 60:02d}.000Z",
        "provider": "openai", "requested_model": ["gpt-4o", "gpt-4o-mini"][i % 2], "model": "gpt-4o",
        "status_code": 200 if i % 7 else 500, "error": None if i % 7 else "upstream 500",
        "prompt_tokens": 10 + i, "completion_tokens": 5, "cost_usd": 0.001 * (i % 5) if i % 11 else None,
        "latency_ms": 100.0 + i * 3.25, "ttft_ms": 20.0 + i, "stream": i % 2, "user": f"u{i % 3}",
        "feature": ["chat", None][i % 2], "cache": "hit" if i % 13 == 0 else None,
        "saved_usd": 0.002 if i % 13 == 0 else None, "failover_from": "anthropic:claude" if i % 17 == 0 else None,
        "failover_reason": "429" if i % 17 == 0 else None,
    }  # fmt: skip
    row.update(kw)
    return row


def _write(db, rows):
    with db.conn:
        db["flows"].insert_all(rows, replace=True)


def test_outbox_queues_every_change_and_backfills_on_install(tmp_path):
    db = open_ledger(tmp_path / "l.db")
    _write(db, [_flow(i) for i in range(5)])
    assert outbox.install(db.conn) == 5  # the rows already there
    _write(db, [_flow(5), _flow(0, cost_usd=9.0)])  # a new row, and a replaced one
    db.conn.execute("UPDATE flows SET team = 'x' WHERE id = 'flow-0001'")
    assert outbox.pending(db.conn) == 8
    batch = outbox.next_batch(db.conn, 100)
    assert {r["id"] for r in batch.rows["flows"]} == {f"flow-{i:04d}" for i in range(6)}
    assert next(r for r in batch.rows["flows"] if r["id"] == "flow-0000")["cost_usd"] == 9.0  # as it is now
    outbox.acknowledge(db.conn, batch.last_seq)
    assert outbox.pending(db.conn) == 0 and outbox.next_batch(db.conn) is None
    assert outbox.install(db.conn) == 0  # installing again queues nothing twice
    assert outbox.uninstall(db.conn) == 0
    _write(db, [_flow(6)])
    assert not outbox.installed(db.conn)
    assert outbox.install(db.conn) == 7  # after running without a central ledger: everything again


def _wait(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_shipper_survives_an_outage_and_ships_each_row_once(tmp_path, pg_server):
    db = open_ledger(tmp_path / "l.db")
    _write(db, [_flow(i) for i in range(50)])
    changes = []
    shipper = Shipper(tmp_path / "l.db", pg_server.url, poll=0.05, on_change=lambda ok, why: changes.append(ok))
    assert shipper.start() == 50
    assert _wait(lambda: shipper.backlog == 0 and shipper.shipped >= 50)
    pg_server.stop()
    _write(db, [_flow(i) for i in range(50, 120)])
    with db.conn:
        db["events"].insert({"at": "2026-11-02T00:00:00.000Z", "kind": "test", "message": "m"})
    assert _wait(lambda: shipper.healthy is False)
    assert _wait(lambda: outbox.pending(db.conn) == 71)  # waiting, locally
    pg_server.start()
    assert _wait(lambda: outbox.pending(db.conn) == 0, timeout=60)
    assert changes == [False, True]
    assert shipper.stop(2)
    ((n, distinct),) = pg_server.query("select count(*), count(distinct id) from flows")
    assert n == distinct == 120
    assert pg_server.query("select count(*) from events where kind = 'test'") == [(1,)]
    # shipped again from scratch (a lost acknowledgement): same rows, none twice
    outbox.uninstall(db.conn)
    again = Shipper(tmp_path / "l.db", pg_server.url, poll=0.05)
    assert again.start() == 121
    assert _wait(lambda: again.backlog == 0 and again.shipped >= 121)
    again.stop(2)
    assert pg_server.query("select count(*) from flows") == [(120,)]


def _rounded(v):
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x) for x in v]
    return v


@pytest.mark.parametrize("by", ["model", "user", "day", "failover", "feature"])
def test_report_is_the_same_on_sqlite_and_postgresql(tmp_path, pg_server, by):
    db = open_ledger(tmp_path / "l.db")
    _write(db, [_flow(i) for i in range(80)])
    shipper = Shipper(tmp_path / "l.db", pg_server.url, poll=0.05)
    shipper.start()
    assert _wait(lambda: shipper.backlog == 0 and shipper.shipped >= 80)
    shipper.stop(2)
    local = report(db, "2026-11-03", by).to_dict()
    with open_reader(pg_server.url) as pg:
        central = report(pg, "2026-11-03", by).to_dict()
    for r in (local, central):
        r.pop("until")
    assert _rounded(central) == _rounded(local)  # the sums' order differs between engines: the last bits too
    assert local["total"]["requests"] > 0


def test_reader_says_what_is_wrong(pg_server):
    with pytest.raises(ConnectionError, match="nothing has been shipped"):
        open_reader(pg_server.url)
    with pytest.raises(ConnectionError, match="unavailable"):
        open_reader("postgresql://turnout@127.0.0.1:1/none")


def test_placeholders_leave_quoted_text_alone():
    assert postgres.to_pg("a = ? and b like '5%?' and c = ?") == "a = %s and b like '5%?' and c = %s"
    assert postgres.safe_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"


def test_local_columns_follow_sqlite_types(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("create table t (a TEXT, b INTEGER, c FLOAT, d REAL, e)")
    assert postgres.local_columns(conn, "t") == [
        ("a", "text"), ("b", "integer"), ("c", "double precision"), ("d", "double precision"), ("e", "text"),
    ]  # fmt: skip


def test_reconnecting_takes_no_table_lock_while_others_upsert(tmp_path, pg_server):
    """An instance that reconnects runs sync_schema while the others are mid-upsert: with the schema
    current it must issue no DDL (DDL locks the table even as a no-op, and deadlocked with them)."""
    db = open_ledger(tmp_path / "l.db")
    _write(db, [_flow(1)])
    tables = list(outbox.SHIPPED)
    first = postgres.connect(pg_server.url)
    postgres.sync_schema(first, db.conn, tables)
    busy, again = postgres.connect(pg_server.url), postgres.connect(pg_server.url)
    try:
        with busy.transaction():  # another instance's upsert, its transaction still open
            postgres.upsert(busy, "other", {"flows": [_flow(2)]})
            again.execute("SET lock_timeout = '2s'")
            postgres.sync_schema(again, db.conn, tables)  # a table lock would wait for `busy`, and time out
    finally:
        for c in (first, busy, again):
            c.close()
    assert pg_server.query("select count(*) from flows") == [(1,)]
