"""The background ledger writer: the proxy's event loop never waits on SQLite.

Rows are made storable (`rows.storable_row`) before they are queued; one thread batches them into
transactions. Two kinds of failure, told apart by the exception:
- the store's (disk full, file locked, read-only, I/O): the batch is kept and retried with backoff;
  `healthy` turns False at once, and past `max_backlog` rows or `max_backlog_bytes` queued the proxy
  refuses new traffic (`over_backlog`) rather than forward what it cannot record;
- one row's (a value SQLite refuses): the batch is written row by row under savepoints, and a row that
  still fails is moved aside — an `events` row `ledger_row_rejected` holding it as ASCII JSON, and a
  log line — so it never blocks the rows behind it.
Rows still unwritten when the writer gives up at shutdown go to a JSON-lines file beside the ledger.
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
from collections.abc import Callable
from typing import Any

from .rows import quarantine_data, row_bytes, storable_row
from .store import iso_utc, open_ledger

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


def is_store_error(e: BaseException) -> bool:
    """Whether a failed write is the store's fault (retry it all later) rather than one row's (set it aside)."""
    if isinstance(e, sqlite3.OperationalError | OSError | MemoryError):
        return True
    return type(e) is sqlite3.DatabaseError  # disk I/O and corruption surface as the bare class


Item = tuple[str, dict[str, Any], int, "Callable[[], None] | None"]  # table, row, bytes, on_written


def _notify(items: list[Item]) -> None:
    for item in items:
        if item[3] is not None:
            try:
                item[3]()
            except Exception:  # noqa: BLE001
                log.exception("turnout ledger: an on_written callback failed")


class LedgerWriter:
    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 500,
        max_delay: float = 0.05,
        max_backlog: int = 10_000,
        max_backlog_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.max_backlog = max_backlog
        self.max_backlog_bytes = max_backlog_bytes
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._queued_bytes = 0  # of rows submitted and not yet written (or set aside)
        self.rejected = 0  # rows set aside because SQLite refused them
        self._pending: list[Item] = []
        self._columns: dict[str, list[str]] = {}
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        # Open (and migrate) on the caller's thread so a bad path fails at start, loudly.
        self._db = open_ledger(self.path, check_same_thread=False)
        # Another writer holding the lock must not hide a stuck ledger for 30 s: fail fast, keep the rows, retry.
        self._db.conn.execute("PRAGMA busy_timeout=2000")

    # -- the caller's side (the event loop) -------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="turnout-ledger", daemon=True)
        self._thread.start()

    def submit(self, table: str, row: dict[str, Any], on_written: Callable[[], None] | None = None) -> None:
        """Queue a row. `on_written` is called on the writer thread once it is committed (or set aside, or
        spilled at shutdown): whatever it does must be thread-safe."""
        row = storable_row(row) if table != _SQL else row
        size = row_bytes(row)
        with self._cond:
            self._submitted += 1
            self._queued_bytes += size
        self._queue.put((table, row, size, on_written))

    def durable(self) -> None:
        """Audit mode: commit each batch as soon as it forms, with fsync (`synchronous=FULL`)."""
        self.max_delay = 0.0
        self._db.conn.execute("PRAGMA synchronous=FULL")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Queue a statement (an update or delete) to run in order with the rows."""
        self.submit(_SQL, {"sql": sql, "params": params})

    @property
    def backlog(self) -> int:
        return self._submitted - self._written

    @property
    def backlog_bytes(self) -> int:
        return self._queued_bytes

    @property
    def healthy(self) -> bool:
        """Rows are landing: False from the first failed write until one succeeds again."""
        return self.last_error is None

    @property
    def over_backlog(self) -> bool:
        """More is queued than the proxy may hold: new traffic must be refused until it drains."""
        return self.backlog >= self.max_backlog or self._queued_bytes >= self.max_backlog_bytes

    @property
    def written(self) -> int:
        return self._written

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted so far is on disk (or set aside); False on timeout."""
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
        """Write what is queued and stop. A store that is failing gets a few seconds, not `timeout`:
        waiting longer would only delay the exit; what is left then is spilled to a file."""
        ok = self.flush(timeout if self.healthy else min(timeout, 5.0))
        self._stopping = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not ok:
            self._spill()
        try:
            self._db.conn.close()
        except sqlite3.Error:
            pass
        return ok

    def _spill(self) -> None:
        """Rows the ledger could not take at shutdown, to a JSON-lines file beside it — never dropped silently."""
        items = [i for i in self._pending if i[0] != _SQL]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item[0] != _SQL:
                items.append(item)
        if not items:
            return
        spill = self.path.with_name(f"{self.path.name}.unwritten-{int(time.time())}.jsonl")
        try:
            with open(spill, "a", encoding="ascii") as f:
                for table, row, _, _ in items:
                    f.write(quarantine_data({"table": table, "row": row}) + "\n")
            log.error(
                "turnout ledger: %d row(s) could not be written to %s (%s); saved to %s",
                len(items),
                self.path,
                self.last_error,
                spill,
            )
        except OSError as e:
            log.error(
                "turnout ledger: %d row(s) could not be written to %s (%s), nor saved to %s (%s): lost",
                len(items),
                self.path,
                self.last_error,
                spill,
                e,
            )
        _notify(items)

    # -- the writer thread ---------------------------------------------------------------

    _stopping = False

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
                try:
                    self._write(batch)
                    rejected: list[tuple[Item, BaseException]] = []
                except Exception as e:  # noqa: BLE001
                    if is_store_error(e):
                        raise
                    rejected = self._write_each(batch)  # one row is at fault: find it, write the rest
            except Exception as e:  # noqa: BLE001 - the writer thread must never die
                self._pending = batch
                if self.last_error is None or backoff >= 5:
                    log.error("turnout ledger: cannot write %d row(s) to %s: %s — retrying", len(batch), self.path, e)
                self.last_error = f"{type(e).__name__}: {e}"
                if stopping or self._stopping:
                    return  # close() spills what is left
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if rejected:
                self._set_aside(rejected)
            if self.last_error is not None:
                log.warning("turnout ledger: writes to %s recovered", self.path)
            self.last_error = None
            backoff = 0.5
            with self._cond:
                self._written += len(batch)
                self._queued_bytes -= sum(item[2] for item in batch)
                self._cond.notify_all()
            _notify(batch)

    def _cols(self, table: str) -> list[str]:
        if table not in self._columns:
            self._columns[table] = [c.name for c in self._db[table].columns]
        return self._columns[table]

    def _insert_sql(self, table: str, rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
        cols = self._cols(table)
        unknown = set().union(*rows) - set(cols)
        if unknown:  # a bug upstream of here must not wedge the writer: keep the row, say what was dropped
            log.error("turnout ledger: dropping unknown column(s) %s of %s rows", sorted(unknown), table)
        names, marks = ", ".join(f"[{c}]" for c in cols), ", ".join("?" * len(cols))
        return f"INSERT OR REPLACE INTO [{table}] ({names}) VALUES ({marks})", cols

    def _write(self, batch: list[Item]) -> None:
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # consecutive runs per table: statements and rows keep the order they were queued in
            for table, group in itertools.groupby(batch, key=lambda item: item[0]):
                rows = [item[1] for item in group]
                if table == _SQL:
                    for stmt in rows:
                        conn.execute(stmt["sql"], stmt["params"])
                    continue
                sql, cols = self._insert_sql(table, rows)
                conn.executemany(sql, [_values(r, cols) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite already rolled back on SQLITE_FULL and friends
                conn.execute("ROLLBACK")
            raise

    def _write_each(self, batch: list[Item]) -> list[tuple[Item, BaseException]]:
        """The batch in one transaction, each item under its own savepoint; returns the items SQLite refused.
        A store error (disk full…) still aborts the whole batch, to be retried."""
        conn = self._db.conn
        rejected: list[tuple[Any, BaseException]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                table, row = item[0], item[1]
                conn.execute("SAVEPOINT one")
                try:
                    if table == _SQL:
                        conn.execute(row["sql"], row["params"])
                    else:
                        sql, cols = self._insert_sql(table, [row])
                        conn.execute(sql, _values(row, cols))
                except Exception as e:  # noqa: BLE001
                    if is_store_error(e):
                        raise
                    conn.execute("ROLLBACK TO one")
                    rejected.append((item, e))
                conn.execute("RELEASE one")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return rejected

    def _set_aside(self, rejected: list[tuple[Item, BaseException]]) -> None:
        """Rows SQLite refused: kept as `events` rows (ASCII JSON) with their error, and logged."""
        self.rejected += len(rejected)
        events = []
        for (table, row, _, _), e in rejected:
            error = f"{type(e).__name__}: {e}"[:500]
            log.error(
                "turnout ledger: %s row %s could not be written (%s); kept as an events row",
                table,
                row.get("id"),
                error,
            )
            events.append(
                {"at": iso_utc(time.time()), "kind": "ledger_row_rejected", "flow_id": str(row.get("id") or "")[:100] or None,
                 "message": f"{table} row could not be written: {error}", "data": quarantine_data({"table": table, "row": row})}
            )  # fmt: skip
        try:
            self._write([("events", ev, 0, None) for ev in events])
        except Exception:  # noqa: BLE001 - last resort: the log holds it
            for ev in events:
                log.error("turnout ledger: could not keep the rejected row either: %s", ev["data"][:2000])
