"""The response cache's bookkeeping: which keys exist, their size and age, LRU order.

The entries themselves live in the ledger's `cache_entries` table (one file to copy, survives
restarts). This in-memory index answers "is there a fresh entry?" without touching SQLite on
a miss, and decides evictions; the addon reads a hit's body by primary key.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple


class IndexEntry(NamedTuple):
    size: int
    created_at: float


@dataclass
class CacheLimits:
    ttl: float = 0.0  # seconds; 0 = entries never expire
    max_entries: int = 100_000
    max_bytes: int = 512 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.ttl < 0 or self.max_entries < 1 or self.max_bytes < 1:
            raise ValueError("ttl must be >= 0 and max_entries, max_bytes >= 1")


class CacheIndex:
    """Keys in least-recently-used order (oldest first)."""

    def __init__(self, limits: CacheLimits) -> None:
        self.limits = limits
        self._entries: OrderedDict[str, IndexEntry] = OrderedDict()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def load(self, rows: Iterable[tuple[str, int, float]]) -> list[str]:
        """(key, size, created_at) in LRU order; returns keys evicted to fit the limits."""
        for key, size, created in rows:
            self._entries[key] = IndexEntry(size or 0, created)
            self.total_bytes += size or 0
        return self._evict()

    def expired(self, entry: IndexEntry, now: float) -> bool:
        return self.limits.ttl > 0 and now - entry.created_at > self.limits.ttl

    def lookup(self, key: str, now: float) -> tuple[IndexEntry | None, bool]:
        """(entry, expired): a fresh entry is touched (moves to most recent); an expired one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        if self.expired(entry, now):
            self.remove(key)
            return None, True
        self._entries.move_to_end(key)
        return entry, False

    def add(self, key: str, size: int, now: float) -> list[str]:
        self.remove(key)
        self._entries[key] = IndexEntry(size, now)
        self.total_bytes += size
        return self._evict(keep=key)

    def remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.total_bytes -= entry.size

    def _evict(self, keep: str | None = None) -> list[str]:
        evicted = []
        while self._entries and (
            len(self._entries) > self.limits.max_entries or self.total_bytes > self.limits.max_bytes
        ):
            key = next(iter(self._entries))
            if key == keep:
                break
            self.remove(key)
            evicted.append(key)
        return evicted


def load_index_rows(conn: sqlite3.Connection) -> list[tuple[str, int, float]]:
    return conn.execute(
        """select key, size, (julianday(created_at) - 2440587.5) * 86400.0
           from cache_entries order by coalesce(last_hit_at, created_at)"""
    ).fetchall()


def read_entry(conn: sqlite3.Connection, key: str) -> dict[str, Any] | None:
    cur = conn.execute("select * from cache_entries where key = ?", (key,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row))


class HotEntries:
    """Recently stored or served entries, in memory: a hit right after a store must not wait for
    the background writer, and hot answers skip SQLite. Bounded by bytes — the answer's text plus
    what the entry costs around it (key, dict, timestamps) — least recently used out."""

    ENTRY_OVERHEAD = 600  # bytes per entry besides its answer text (measured: ~530 on CPython 3.12)

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._bytes = 0

    @classmethod
    def _size(cls, entry: dict[str, Any]) -> int:
        return len(entry.get("response_body") or "") + cls.ENTRY_OVERHEAD

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.discard(key)
        size = self._size(entry)
        if size > self.max_bytes:
            return
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= self._size(old)

    def discard(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= self._size(old)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
