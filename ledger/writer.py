"""The background ledger writer: the proxy's event loop never waits on SQLite.

Rows go into a queue; one thread batches them into transactions. A failed write (disk
full, file locked, read-only) keeps the rows and retries — it is reported loudly and
`healthy` turns False, so the proxy can refuse traffic instead of forwarding it unrecorded.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .store import open_ledger

log = logging.getLogger(__name__)

_STOP = object()
_SQL = "\0sql"  # a queue item that is a statement, not a row


_SCALAR_TYPES = frozenset({type(None), str, int, float, bytes, bool})


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bytes):
        return value
    return json.dumps(value, default=str)


def _values(row: dict[str, Any], cols: list[str]) -> tuple[Any, ...]:
    """The row's values in column order; only non-scalars pay for a call (this runs holding the GIL)."""
    values = tuple(map(row.get, cols))
    if _SCALAR_TYPES.issuperset(map(type, values)):
        return values
    return tuple(map(_scalar, values))


class LedgerWriter:
    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 500,
        max_delay: float = 0.05,
        max_backlog: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.max_backlog = max_backlog
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._columns: dict[str, list[str]] = {}
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        # Open (and migrate) on the caller's thread so a bad path fails at start, loudly.
        self._db = open_ledger(self.path, check_same_thread=False)

    # -- the caller's side (the event loop) -------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="turnout-ledger", daemon=True)
        self._thread.start()

    def submit(self, table: str, row: dict[str, Any]) -> None:
        with self._cond:
            self._submitted += 1
        self._queue.put((table, row))

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Queue a statement (an update or delete) to run in order with the rows."""
        self.submit(_SQL, {"sql": sql, "params": params})

    @property
    def backlog(self) -> int:
        return self._submitted - self._written

    @property
    def healthy(self) -> bool:
        return self.last_error is None or self.backlog < self.max_backlog

    @property
    def written(self) -> int:
        return self._written

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted so far is on disk; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> bool:
        ok = self.flush(timeout)
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not ok:
            log.error("turnout ledger: %d row(s) could not be written to %s: %s", self.backlog, self.path, self.last_error)
        try:
            self._db.conn.close()
        except sqlite3.Error:
            pass
        return ok

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        stopping = False
        while not stopping or self._pending:
            batch = self._pending
            self._pending = []
            if not batch:
                item = self._queue.get()
                if item is _STOP:
                    return
                batch.append(item)
            deadline = time.monotonic() + self.max_delay
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    # Let the batch gather: blocking in get() would wake this thread (and take the GIL
                    # from the event loop) once for every row submitted.
                    time.sleep(left)
                    continue
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._write(batch)
            except Exception as e:  # noqa: BLE001 - the writer thread must never die
                self._pending = batch
                if self.last_error is None or backoff >= 5:
                    log.error("turnout ledger: cannot write %d row(s) to %s: %s — retrying", len(batch), self.path, e)
                self.last_error = f"{type(e).__name__}: {e}"
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if stopping and backoff >= 5:
                    log.error("turnout ledger: giving up on %d row(s) at shutdown", len(batch))
                    return
                continue
            if self.last_error is not None:
                log.warning("turnout ledger: writes to %s recovered", self.path)
            self.last_error = None
            backoff = 0.5
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()

    def _cols(self, table: str) -> list[str]:
        if table not in self._columns:
            self._columns[table] = [c.name for c in self._db[table].columns]
        return self._columns[table]

    def _write(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # consecutive runs per table: statements and rows keep the order they were queued in
            for table, group in itertools.groupby(batch, key=lambda item: item[0]):
                rows = [row for _, row in group]
                if table == _SQL:
                    for stmt in rows:
                        conn.execute(stmt["sql"], stmt["params"])
                    continue
                cols = self._cols(table)
                unknown = set().union(*rows) - set(cols)
                if unknown:  # a bug upstream of here must not wedge the writer: keep the row, say what was dropped
                    log.error("turnout ledger: dropping unknown column(s) %s of %s rows", sorted(unknown), table)
                sql = f"INSERT OR REPLACE INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
                conn.executemany(sql, [_values(r, cols) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite already rolled back on SQLITE_FULL and friends
                conn.execute("ROLLBACK")
            raise
