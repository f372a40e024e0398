"""Budget counters: reservations before a call, settlement after it, windows rebuilt from the ledger.

Pure policy, no proxy (`addons/budget.py` is the glue). How it behaves, and every key of
`[[budgets]]`, is in docs/config.md. A request is admitted while `spent + reserved` is below every
limit it falls under, so concurrent requests overshoot a limit by at most what was reserved in flight
when it was crossed. Rolling windows keep spend in 1/120-window buckets.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .budget_specs import BudgetSpec
from .queries import SPENT_SQL
from .windows import window_end, window_start

ROLLING_BUCKETS = 120


class Amount(NamedTuple):
    usd: float = 0.0
    tokens: int = 0
    requests: int = 0

    def __add__(self, other: Any) -> "Amount":  # type: ignore[override]
        return Amount(self.usd + other.usd, self.tokens + other.tokens, self.requests + other.requests)

    def __sub__(self, other: "Amount") -> "Amount":
        return Amount(
            max(0.0, self.usd - other.usd), max(0, self.tokens - other.tokens), max(0, self.requests - other.requests)
        )

    def get(self, limit: str) -> float:
        return float(getattr(self, limit))


class Counter:
    """Spend of one (budget, scope value): calendar-windowed or rolling (bucketed)."""

    def __init__(self, spec: BudgetSpec, value: str) -> None:
        self.spec = spec
        self.value = value
        self.reserved = Amount()
        self.alerted = False
        self.blocked_logged = False
        self.admitted: collections.deque[float] = collections.deque()  # admission times, for throttle_rpm
        self._spent = Amount()
        self._start = 0.0  # calendar: the window's start
        self._end = 0.0
        self._buckets: collections.deque[tuple[float, Amount]] = collections.deque()  # rolling: (bucket start, amount)
        self._bucket = (spec.rolling or 0) / ROLLING_BUCKETS

    def _roll(self, now: float) -> None:
        spec = self.spec
        if spec.rolling is None:
            if now >= self._end or now < self._start:
                self._start, self._end = window_start(spec.window or "day", now), window_end(spec.window or "day", now)
                self._spent = Amount()
                self.alerted = self.blocked_logged = False
            return
        horizon = now - spec.rolling
        changed = False
        while self._buckets and self._buckets[0][0] + self._bucket <= horizon:
            self._buckets.popleft()
            changed = True
        if changed:
            total = Amount()
            for _, a in self._buckets:
                total = total + a
            self._spent = total  # re-summed, so float error never accumulates

    def add(self, amount: Amount, at: float) -> None:
        self._roll(at)
        if self.spec.rolling is None:
            if self._start <= at < self._end:
                self._spent = self._spent + amount
            return
        start = math.floor(at / self._bucket) * self._bucket
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1] = (start, self._buckets[-1][1] + amount)
        else:
            self._buckets.append((start, amount))
            if len(self._buckets) > 1 and self._buckets[-2][0] > start:  # out of order (rebuild): keep sorted
                self._buckets = collections.deque(sorted(self._buckets, key=lambda b: b[0]))
        self._spent = self._spent + amount

    def spent(self, now: float) -> Amount:
        self._roll(now)
        return self._spent

    def resets_at(self, now: float) -> float | None:
        """Calendar: the next boundary. Rolling: when the oldest spend drops out (None: nothing spent)."""
        self._roll(now)
        if self.spec.rolling is None:
            return self._end
        if not self._buckets:
            return None
        return self._buckets[0][0] + self._bucket + self.spec.rolling

    def utilisation(self, now: float, extra: Amount = Amount()) -> float:
        """The highest fraction of any limit that spent + reserved (+ extra) reaches."""
        committed = self.spent(now) + self.reserved + extra
        u = 0.0
        for limit, value in self.spec.limits().items():
            used = committed.get(limit)
            u = max(u, math.inf if value <= 0 else used / value)
        return u

    def rpm_used(self, now: float) -> int:
        while self.admitted and self.admitted[0] <= now - 60:
            self.admitted.popleft()
        return len(self.admitted)


@dataclass
class BudgetStatus:
    name: str
    scope: str
    scope_value: str
    window: str
    spent_usd: float
    spent_tokens: int
    spent_requests: int
    reserved_usd: float
    reserved_tokens: int
    reserved_requests: int
    limit_usd: float | None
    limit_tokens: int | None
    limit_requests: int | None
    resets_at: float | None
    utilisation: float
    state: str  # ok | alert | throttled | blocked

    def as_dict(self) -> dict[str, Any]:
        from .store import iso_utc

        d = dict(self.__dict__)
        d["resets_at"] = iso_utc(self.resets_at)
        d["utilisation"] = round(self.utilisation, 6) if math.isfinite(self.utilisation) else None
        return d

    def describe(self) -> str:
        """`budget "daily" (team=search): spent $4.9981 of $5.0000 (day, resets 2025-…Z)`."""
        from .store import iso_utc

        parts = []
        for unit, spent, limit in (
            ("usd", self.spent_usd, self.limit_usd),
            ("tokens", self.spent_tokens, self.limit_tokens),
            ("requests", self.spent_requests, self.limit_requests),
        ):
            if limit is None:
                continue
            parts.append(f"${spent:.4f} of ${limit:.4f}" if unit == "usd" else f"{spent:,} of {limit:,} {unit}")
        who = "" if self.scope == "global" else f" ({self.scope}={self.scope_value})"
        if self.reserved_requests:
            parts.append(f"{self.reserved_requests} request(s) in flight reserving ${self.reserved_usd:.4f}")
        resets = iso_utc(self.resets_at) if self.resets_at else "as spend ages out"
        return f'budget "{self.name}"{who}: spent {"; ".join(parts) or "nothing"} ({self.window}, resets at {resets})'


def _state(spec: BudgetSpec, u: float, throttled: bool = False) -> str:
    if spec.block and spec.limits() and u >= 1.0:
        return "blocked"
    if throttled or (
        spec.throttle_rpm is not None and spec.throttle_at is not None and u >= spec.throttle_at and spec.limits()
    ):
        return "throttled"
    if spec.alert_at is not None and u >= spec.alert_at:
        return "alert"
    return "ok"


def status_of(counter: Counter, now: float) -> BudgetStatus:
    spec = counter.spec
    spent = counter.spent(now)
    u = counter.utilisation(now)
    return BudgetStatus(
        name=spec.name, scope=spec.scope, scope_value=counter.value, window=spec.window_label,
        spent_usd=round(spent.usd, 10), spent_tokens=spent.tokens, spent_requests=spent.requests,
        reserved_usd=round(counter.reserved.usd, 10), reserved_tokens=counter.reserved.tokens,
        reserved_requests=counter.reserved.requests,
        limit_usd=spec.usd, limit_tokens=spec.tokens, limit_requests=spec.requests,
        resets_at=counter.resets_at(now), utilisation=u, state=_state(spec, u),
    )  # fmt: skip


@dataclass(eq=False)
class BudgetReservation:
    """What one request holds in each budget it falls under, until it settles or is released.

    `blocked_by` / `throttled_by` say why nothing was reserved; `alerts` are the budgets at or
    over their alert threshold, and `new_alerts` the ones this request pushed over it.
    """

    amount: Amount
    counters: list[Counter] = field(default_factory=list)
    blocked_by: BudgetStatus | None = None
    throttled_by: BudgetStatus | None = None
    alerts: list[BudgetStatus] = field(default_factory=list)
    new_alerts: list[BudgetStatus] = field(default_factory=list)
    done: bool = False

    @property
    def admitted(self) -> bool:
        return self.blocked_by is None and self.throttled_by is None


class BudgetBook:
    """Every budget's counters; reserve / settle / release. Not thread-safe: one event loop owns it."""

    def __init__(self, specs: Iterable[BudgetSpec] = (), *, sweep_threshold: int = 50_000) -> None:
        self.specs = list(specs)
        self.counters: dict[tuple[str, str], Counter] = {}
        self.sweep_threshold = sweep_threshold
        self._sweep_at = sweep_threshold

    def counter(self, spec: BudgetSpec, value: str, now: float | None = None) -> Counter:
        key = (spec.name, value)
        c = self.counters.get(key)
        if c is None:
            if len(self.counters) >= self._sweep_at:
                self.sweep(time.time() if now is None else now)
            c = self.counters[key] = Counter(spec, value)
        return c

    def sweep(self, now: float) -> int:
        """Forget counters that hold nothing — no spend in their window, nothing reserved, no admission in
        the last minute — since a fresh counter is identical. Keeps per-user budgets bounded by the users
        active in a window, not every user ever seen. Amortised: runs when the table doubles."""
        empty = Amount()
        idle = [
            key
            for key, c in self.counters.items()
            if c.reserved == empty and c.rpm_used(now) == 0 and c.spent(now) == empty
        ]
        for key in idle:
            del self.counters[key]
        self._sweep_at = max(self.sweep_threshold, 2 * len(self.counters))
        return len(idle)

    def applicable(self, props: dict[str, str | None], now: float | None = None) -> list[Counter]:
        out = []
        for spec in self.specs:
            value = spec.applies(props)
            if value is not None:
                out.append(self.counter(spec, value, now))
        return out

    def needs_estimate(self, props: dict[str, str | None]) -> bool:
        """Whether any budget this request falls under limits USD or tokens (worth counting its tokens)."""
        return any((s.usd is not None or s.tokens is not None) and s.applies(props) is not None for s in self.specs)

    def reserve(
        self, props: dict[str, str | None], usd: float, tokens: int, now: float | None = None
    ) -> BudgetReservation:
        """Admit the request and hold its worst case (usd, tokens, 1 request) — or say which budget refuses it."""
        now = time.time() if now is None else now
        amount = Amount(max(0.0, usd), max(0, int(tokens)), 1)
        res = BudgetReservation(amount)
        counters = self.applicable(props, now)
        for c in counters:
            spec = c.spec
            u = c.utilisation(now)
            if spec.block and spec.limits() and u >= 1.0:
                res.blocked_by = status_of(c, now)
                return res
            if spec.throttle_rpm is not None and spec.throttle_at is not None and u >= spec.throttle_at:
                if c.rpm_used(now) >= spec.throttle_rpm:
                    res.throttled_by = status_of(c, now)
                    res.throttled_by.state = "throttled"
                    return res
        for c in counters:
            spec = c.spec
            # Alerts describe the budget as this request found it (it was admitted: never "blocked").
            if spec.alert_at is not None and c.utilisation(now) >= spec.alert_at:
                st = status_of(c, now)
                if st.state == "blocked":  # only when block = false: over the limit, yet admitted
                    st.state = "alert"
                res.alerts.append(st)
                if not c.alerted:
                    c.alerted = True
                    res.new_alerts.append(st)
            elif spec.rolling is not None:
                c.alerted = False  # a rolling window can fall back below the threshold
            c.reserved = c.reserved + amount
            c.admitted.append(now)
            res.counters.append(c)
        return res

    def settle(
        self, res: BudgetReservation, actual_usd: float | None, actual_tokens: int | None, now: float | None = None
    ) -> None:
        """Replace the reservation by what the request really cost (None: unknown, counts 0)."""
        if res.done:
            return
        now = time.time() if now is None else now
        self.release(res)
        spent = Amount(max(0.0, actual_usd or 0.0), max(0, int(actual_tokens or 0)), 1)
        for c in res.counters:
            c.add(spent, now)

    def release(self, res: BudgetReservation) -> None:
        """Give the reservation back without spending (the request failed before it cost anything)."""
        if res.done:
            return
        res.done = True
        for c in res.counters:
            c.reserved = c.reserved - res.amount

    def statuses(self, now: float | None = None) -> list[BudgetStatus]:
        """One status per counter; a budget nobody has spent under yet still shows (global or `match`)."""
        now = time.time() if now is None else now
        for spec in self.specs:
            if spec.scope == "global":
                self.counter(spec, "*")
            elif spec.match is not None:
                self.counter(spec, spec.match)
        order = {s.name: i for i, s in enumerate(self.specs)}
        return [
            status_of(c, now)
            for (_, _), c in sorted(self.counters.items(), key=lambda kv: (order.get(kv[0][0], 0), kv[0][1]))
        ]

    def earliest_start(self, now: float) -> float:
        starts = [
            now - s.rolling if s.rolling is not None else window_start(s.window or "day", now) for s in self.specs
        ]
        return min(starts, default=now)

    def rebuild_from_ledger(self, db: Any, now: float | None = None) -> int:
        """Refill every window from the ledger's `flows` rows (a sqlite_utils.Database or sqlite3 connection).

        Counts what was really spent: cache hits and blocked flows are skipped; failed flows count
        only when the provider reported usage. Returns the number of flows counted.
        """
        from .store import iso_utc, parse_iso

        now = time.time() if now is None else now
        if not self.specs:
            return 0
        conn = getattr(db, "conn", db)
        since = iso_utc(self.earliest_start(now))
        self.counters.clear()
        n = 0
        for started, cost, pt, ct, key, team, feature, user, model in conn.execute(SPENT_SQL, (since,)):
            try:
                at = parse_iso(started)
            except (TypeError, ValueError):
                continue
            if at > now:
                continue
            props = {"key": key, "team": team, "feature": feature, "user": user, "model": model}
            for c in self.applicable(props):
                if c.spec.rolling is not None and at <= now - c.spec.rolling:
                    continue
                if c.spec.rolling is None and at < window_start(c.spec.window or "day", now):
                    continue
                c.add(Amount(float(cost or 0.0), int(pt or 0) + int(ct or 0), 1), at)
            n += 1
        return n
