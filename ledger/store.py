"""Opening a ledger file: WAL, sane pragmas, migrations applied."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from .migrations import migrate


def open_ledger(path: str | Path, *, check_same_thread: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) a ledger with WAL journaling and every migration applied."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=check_same_thread, timeout=30, isolation_level=None)
    db = sqlite_utils.Database(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the last commits.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    migrate(db)
    return db


def iso_utc(ts: float | None) -> str | None:
    """Epoch seconds to the ledger's timestamp format (sorts as text, readable by SQLite date functions).

    Several per flow: the date-time part is formatted once per second (strftime is the dear part).
    """
    if ts is None:
        return None
    global _last_second
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    ms = d.microsecond // 1000
    whole = d.replace(microsecond=0)
    cached = _last_second  # one read: other threads may swap it meanwhile
    if cached[0] != whole:
        cached = (whole, whole.strftime("%Y-%m-%dT%H:%M:%S."))
        _last_second = cached
    return f"{cached[1]}{ms:03d}Z"


_last_second: tuple[dt.datetime | None, str] = (None, "")  # the last whole second formatted, and its text


def parse_iso(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def open_reader(target: str | Path) -> Any:
    """The ledger a report reads: a SQLite file, or the central ledger at a postgresql:// URL (`PgLedger`,
    the same `execute`/`close` surface). Raises ConnectionError when the central ledger cannot be read."""
    from .postgres import PgLedger, is_url

    if is_url(str(target)):
        return PgLedger(str(target))
    return open_ledger(Path(target).expanduser())
