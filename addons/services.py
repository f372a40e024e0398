"""What several addons share, as one explicit object: `default_addons()` builds it and hands it to
each addon that needs it, the way `llm` passes its `db` — no addon looks another up.

Who fills what: LedgerStore opens `writer` (`turnout_db`) and sets `durable`; Prices loads `prices`;
Intercept parses `provider_hosts` (`turnout_hosts`); Forward `upstream_urls`; Failover `circuits`;
Record sets `draining` at shutdown; SharedState `state` (Budget, Breakers and Cache use it); Shadow keeps
the measured `quality` per routing group and the groups it `reverted`, which Route reads. Who reads
it: Intercept asks `refusal()`, Cache and Budget write through `writer`, Budget, Route and Record
price with `prices`, Metrics watches the writer's health.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from turnout.ledger.pricing import PriceBook
from turnout.ledger.store import iso_utc
from turnout.ledger.writer import LedgerWriter


@dataclass(eq=False)
class Services:
    writer: LedgerWriter | None = None
    prices: PriceBook = field(default_factory=PriceBook)
    durable: bool = False  # audit mode: an answer ends only once its row is committed
    draining: bool = False  # shutting down: flows in flight finish, new requests get 503
    provider_hosts: dict[str, str] = field(default_factory=dict)  # host -> provider: what Intercept intercepts
    # Shadow's measured quality per group (provider, requested model, cheaper model, task): Metrics exports
    # it; `reverted` groups (auto_revert) are kept by Route until the evidence recovers.
    quality: dict[tuple[str, str, str, str], Any] = field(default_factory=dict)
    degraded: set[tuple[str, str, str, str]] = field(default_factory=set)
    reverted: set[tuple[str, str, str, str]] = field(default_factory=set)
    shadow_counts: dict[str, int] = field(default_factory=dict)  # verdicts, plus `dropped` (not run)
    # All decided verdicts per group, (passed, decided): loaded from the ledger by Route for the evidence
    # policy, kept current by Shadow.
    evidence: dict[tuple[str, str, str, str], tuple[int, int]] = field(default_factory=dict)
    # Forward's upstream redirects as base URLs, per provider ("" for the one that covers every provider):
    # where failover sends a fallback target in a run with --upstream.
    upstream_urls: dict[str, str] = field(default_factory=dict)
    circuits: dict[str, str] = field(default_factory=dict)  # provider -> failover circuit state (Failover)
    # the relay's pool (Failover): calls it carries now, and calls that found it full and went on their own
    pool_in_use: Callable[[], int] | None = None
    pool_overflow: int = 0
    pool_responses: dict[str, int] = field(default_factory=dict)  # provider answers by HTTP version ("HTTP/2")
    # SharedState's Redis (`turnout_state`), or None: budgets, breakers and the cache keep their state here
    state: Any = None
    state_lease: float = 900.0
    # CentralLedger's shipper (`turnout.ledger.shipper.Shipper`) to `turnout_central`, or None
    central: Any = None

    def refusal(self) -> tuple[str, str, str] | None:
        """Why a new provider request must be answered 503 instead of forwarded: (message, type, code), or None."""
        if self.draining:
            return "turnout is shutting down; retry on a new connection", "turnout_shutting_down", "shutting_down"
        w = self.writer
        if w is None or w.over_backlog:
            error = (w.last_error or f"{w.backlog} rows, {w.backlog_bytes // 1024} KiB queued") if w else "no ledger"
            return (
                f"turnout: the ledger cannot keep up ({error}); refusing to forward unrecorded traffic",
                "turnout_ledger_unavailable",
                "ledger_unavailable",
            )
        return None

    def event(self, kind: str, flow_id: str | None, message: str, data: Any) -> None:
        """An `events` row: something that happened to the proxy rather than to one flow."""
        if self.writer is not None:
            self.writer.submit(
                "events",
                {"at": iso_utc(time.time()), "kind": kind, "flow_id": flow_id, "message": message,
                 "data": json.dumps(data, default=str)},
            )  # fmt: skip

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """A statement to run in order with the rows (cache bookkeeping)."""
        if self.writer is not None:
            self.writer.execute(sql, params)
