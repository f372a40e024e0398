"""Shipping the local ledger's rows to the central ledger (PostgreSQL), on a thread of its own.

The local SQLite ledger stays the proxy's only synchronous dependency: requests never wait on
PostgreSQL. The shipper drains the outbox (`turnout.ledger.outbox`) in order, one upsert transaction
per batch, and acknowledges a batch only after PostgreSQL committed it. When PostgreSQL is down it
backs off (0.5 s doubling to 30 s) and the outbox grows on local disk; when it returns, the backlog
ships oldest first. Delivery is at least once; the upsert by key makes it exactly once in effect.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from . import outbox, postgres

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX = 0.5, 30.0


def instance_id(conn: sqlite3.Connection) -> str:
    """This ledger's name in the central one: host and a random suffix, kept in the ledger so it survives restarts."""
    conn.execute("CREATE TABLE IF NOT EXISTS _turnout_instance (id TEXT NOT NULL)")
    row = conn.execute("SELECT id FROM _turnout_instance").fetchone()
    if row:
        return row[0]
    name = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    conn.execute("INSERT INTO _turnout_instance (id) VALUES (?)", [name])
    return name


class Shipper:
    """Ships `ledger_path`'s outbox to `url` until stopped. `on_change(healthy, reason)` is called from the
    shipper's thread when the central ledger goes away or comes back."""

    def __init__(
        self,
        ledger_path: str | Path,
        url: str,
        *,
        batch: int = 500,
        poll: float = 0.25,
        on_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.ledger_path, self.url, self.batch, self.poll = str(ledger_path), url, batch, poll
        self.on_change = on_change
        self.safe_url = postgres.safe_url(url)
        self.healthy: bool | None = None  # None until the first connection attempt
        self.last_error = ""
        self.shipped = 0  # rows upserted since start (re-shipped rows included)
        self.backlog = 0  # outbox entries waiting, as of the last look
        self.errors = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._local: sqlite3.Connection | None = None
        self._pg = None
        self.instance = ""

    def start(self) -> int:
        """Install the outbox (queueing existing rows on a ledger that has none yet) and start shipping.
        Returns how many rows that queued."""
        self._local = sqlite3.connect(self.ledger_path, timeout=30, isolation_level=None, check_same_thread=False)
        self._local.execute("PRAGMA busy_timeout=30000")
        queued = outbox.install(self._local)
        self.instance = instance_id(self._local)
        self.backlog = outbox.pending(self._local)
        self._thread = threading.Thread(target=self._run, name="turnout-shipper", daemon=True)
        self._thread.start()
        return queued

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ship what is waiting for up to `timeout` seconds (if the central ledger is up), then stop.
        True when nothing was left behind; what was stays in the outbox for the next start."""
        if self._thread is None:
            return True
        self._drain_until = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 2)
        left = self.backlog
        if self._local is not None:
            try:
                left = outbox.pending(self._local)
            except sqlite3.Error:
                pass
            self._local.close()
            self._local = None
        self._thread = None
        return left == 0

    _drain_until = 0.0

    def _run(self) -> None:
        backoff = BACKOFF_START
        while True:
            stopping = self._stop.is_set()
            if stopping and (time.monotonic() >= self._drain_until or self.healthy is False):
                break
            try:
                if self._pg is None:
                    self._connect()
                assert self._local is not None
                batch = outbox.next_batch(self._local, self.batch)
                if batch is None:
                    self.backlog = 0
                    if stopping:
                        break
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                self.shipped += postgres.upsert(self._pg, self.instance, batch.rows)
                outbox.acknowledge(self._local, batch.last_seq)
                self.backlog = outbox.pending(self._local)
                backoff = BACKOFF_START
            except sqlite3.Error as e:  # the local ledger (a full disk, say): keep the outbox, try again
                self.errors += 1
                log.warning("turnout central ledger: reading the local outbox failed: %s", e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception as e:  # noqa: BLE001 - psycopg's errors, and the network's
                self.errors += 1
                self._close_pg()
                self._set_health(False, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                if stopping:
                    break
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self._close_pg()

    def _connect(self) -> None:
        assert self._local is not None
        self._pg = postgres.connect(self.url)
        postgres.sync_schema(self._pg, self._local, list(outbox.SHIPPED))
        self._set_health(True, "")

    def _close_pg(self) -> None:
        pg, self._pg = self._pg, None
        if pg is not None:
            try:
                pg.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _set_health(self, healthy: bool, reason: str) -> None:
        was, self.healthy = self.healthy, healthy
        self.last_error = reason
        if was is healthy or (was is None and healthy):
            return
        if self.on_change is not None:
            self.on_change(healthy, reason)
