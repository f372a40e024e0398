"""The local ledger as a durable outbox for the central one (the transactional-outbox pattern).

Triggers append (table, primary key) to `_outbox` in the same transaction as every insert or update
of a shipped table, so a row can never be committed locally without its shipping entry. The shipper
reads entries in `seq` order, ships the rows as they are *now* (a row changed twice ships once, as it
ended), and deletes the entries it shipped only after the central store committed them: a crash
between the two ships those rows again, which the central upsert makes harmless.

Installing on a ledger that already has rows queues them all (backfill), so turning the central
ledger on later — or on again after running without it, which uninstalls — ships everything.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# Shipped tables and their primary key column. `cache_entries` carries the recordings replay reads.
SHIPPED: dict[str, str] = {"flows": "id", "events": "id", "shadow_evals": "id", "cache_entries": "key"}
TABLE = "_outbox"


def _triggers(table: str, pk: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS _outbox_{table}_{op.lower()} AFTER {op} ON [{table}] "
        f"BEGIN INSERT INTO {TABLE} (tbl, pk) VALUES ('{table}', NEW.[{pk}]); END"
        for op in ("INSERT", "UPDATE")
    ]


def installed(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [TABLE]).fetchone() is not None


def install(conn: sqlite3.Connection) -> int:
    """Create the outbox and its triggers if missing; a new outbox queues every existing row. Returns how many."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        fresh = not installed(conn)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, pk)"
        )
        queued = 0
        for table, pk in SHIPPED.items():
            for sql in _triggers(table, pk):
                conn.execute(sql)
            if fresh:
                queued += conn.execute(
                    f"INSERT INTO {TABLE} (tbl, pk) SELECT '{table}', [{pk}] FROM [{table}]"
                ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return queued


def uninstall(conn: sqlite3.Connection) -> int:
    """Drop the triggers and the outbox (nothing is lost: `install` queues every row again). Returns
    how many entries were waiting."""
    if not installed(conn):
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        waiting = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        for table in SHIPPED:
            for op in ("insert", "update"):
                conn.execute(f"DROP TRIGGER IF EXISTS _outbox_{table}_{op}")
        conn.execute(f"DROP TABLE {TABLE}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return waiting


@dataclass
class Batch:
    last_seq: int  # every entry up to this one is covered by `rows`
    rows: dict[str, list[dict]]  # table -> the rows as they are now (a deleted row is simply absent)
    entries: int


def pending(conn: sqlite3.Connection) -> int:
    """Entries waiting (entries are deleted in seq order, so the span is the count, without a scan)."""
    lo, hi = conn.execute(f"SELECT min(seq), max(seq) FROM {TABLE}").fetchone()
    return 0 if lo is None else hi - lo + 1


def next_batch(conn: sqlite3.Connection, limit: int = 500) -> Batch | None:
    """The oldest `limit` entries' rows, read in one snapshot; None when nothing is waiting."""
    conn.execute("BEGIN")  # one read snapshot for the entries and the rows they name
    try:
        entries = conn.execute(f"SELECT seq, tbl, pk FROM {TABLE} ORDER BY seq LIMIT ?", [limit]).fetchall()
        if not entries:
            return None
        keys: dict[str, list[str]] = {}
        for _, table, pk in entries:
            if table in SHIPPED and pk not in keys.setdefault(table, []):
                keys[table].append(pk)
        rows: dict[str, list[dict]] = {}
        for table, pks in keys.items():
            pk_col = SHIPPED[table]
            found: list[dict] = []
            for i in range(0, len(pks), 400):  # under SQLite's bound-parameter limit
                chunk = pks[i : i + 400]
                cur = conn.execute(
                    f"SELECT * FROM [{table}] WHERE [{pk_col}] IN ({', '.join('?' * len(chunk))})", chunk
                )
                cols = [d[0] for d in cur.description]
                found.extend(dict(zip(cols, r)) for r in cur.fetchall())
            rows[table] = found
        return Batch(entries[-1][0], rows, len(entries))
    finally:
        conn.execute("COMMIT")


def acknowledge(conn: sqlite3.Connection, last_seq: int) -> None:
    """The central store committed everything up to `last_seq`: forget those entries."""
    conn.execute(f"DELETE FROM {TABLE} WHERE seq <= ?", [last_seq])
