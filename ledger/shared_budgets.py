"""Budgets kept in the shared store, with the same admission rule as the in-process `BudgetBook`.

A request is admitted while spend + reservations of every budget it falls under are below the limit
(utilisation < 1), and then holds its worst case until it settles. So however many instances admit
at once, the committed total never passes the limit by more than one request's worst case, and the
real spend never passes what was committed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .budget_specs import BudgetSpec
from .budgets import ROLLING_BUCKETS, Amount, BudgetBook, BudgetStatus, _state
from .shared_state import MICRO, CounterKey, RedisState
from .windows import window_end, window_start

DAY = 86400


@dataclass(eq=False)
class SharedReservation:
    amount: Amount
    flow: str
    counters: list[tuple[BudgetSpec, str, CounterKey]] = field(default_factory=list)
    blocked_by: BudgetStatus | None = None
    throttled_by: BudgetStatus | None = None
    alerts: list[BudgetStatus] = field(default_factory=list)
    new_alerts: list[BudgetStatus] = field(default_factory=list)
    done: bool = False
    settle_args: list[tuple[CounterKey, list[Any]]] = field(default_factory=list)


class SharedBudgets:
    """`[[budgets]]` counted in Redis; the specs and scoping are the book's."""

    def __init__(self, specs: list[BudgetSpec], store: RedisState, *, lease: float = 900.0) -> None:
        self.specs = specs
        self.store = store
        self.lease = lease
        self._alerted: set[str] = set()

    def _where(self, spec: BudgetSpec, value: str, now: float) -> tuple[CounterKey, list[Any], list[Any], float]:
        """The counter's keys, its reserve and settle arguments, and when its window resets."""
        if spec.rolling is None:
            start = window_start(spec.window or "day", now)
            end = window_end(spec.window or "day", now)
            ck = self.store.counter_key(spec.name, value, str(int(start)))
            ttl = int(end - now) + DAY
            rolling_ms, bucket_ms, resets = 0, 0, end
        else:
            ck = self.store.counter_key(spec.name, value, "r")
            rolling_ms = int(spec.rolling * 1000)
            bucket_ms = max(1, rolling_ms // ROLLING_BUCKETS)
            ttl = int(spec.rolling) + DAY
            resets = now + spec.rolling
        lims = [
            -1 if spec.usd is None else int(round(spec.usd * MICRO)),
            -1 if spec.tokens is None else spec.tokens,
            -1 if spec.requests is None else spec.requests,
        ]
        reserve = [rolling_ms, bucket_ms, *lims, int(spec.block), -1 if spec.throttle_rpm is None else spec.throttle_rpm,
                   repr(float(spec.throttle_at if spec.throttle_at is not None else 0.0)), ttl]  # fmt: skip
        return ck, reserve, [rolling_ms, bucket_ms, ttl], resets

    def applicable(self, props: dict[str, str | None]) -> list[tuple[BudgetSpec, str]]:
        return [(s, v) for s in self.specs for v in [s.applies(props)] if v is not None]

    def needs_estimate(self, props: dict[str, str | None]) -> bool:
        return BudgetBook(self.specs).needs_estimate(props)

    async def reserve(self, props: dict[str, str | None], usd: float, tokens: int, now: float,
                      flow: str) -> SharedReservation:  # fmt: skip
        amount = Amount(max(0.0, usd), max(0, int(tokens)), 1)
        res = SharedReservation(amount, flow)
        found = self.applicable(props)
        if not found:
            return res
        where = [self._where(spec, value, now) for spec, value in found]
        out = await self.store.reserve(
            flow, [(ck, a) for ck, a, _, _ in where], int(round(amount.usd * MICRO)), amount.tokens, self.lease
        )
        stopped, verdict, numbers = int(out[0]), _text(out[1]), [int(x) for x in out[2:]]
        statuses = []
        for i in range(len(numbers) // 6):
            spec, value = found[i]
            su, st, sr, ru, rt, rr = numbers[6 * i : 6 * i + 6]
            statuses.append(_status(spec, value, Amount(su / MICRO, st, sr), Amount(ru / MICRO, rt, rr), where[i][3]))
        if verdict == "blocked":
            res.blocked_by = statuses[stopped]
            return res
        if verdict == "throttled":
            res.throttled_by = statuses[stopped]
            res.throttled_by.state = "throttled"
            return res
        res.counters = [(spec, value, where[i][0]) for i, (spec, value) in enumerate(found)]
        res.settle_args = [(ck, s) for ck, _, s, _ in where]
        for (spec, value), st_, (ck, _, _, _) in zip(found, statuses, where):
            if spec.alert_at is not None and st_.utilisation >= spec.alert_at:
                if st_.state == "blocked":
                    st_.state = "alert"
                res.alerts.append(st_)
                if ck.spent not in self._alerted:  # logged once per window by each instance
                    self._alerted.add(ck.spent)
                    res.new_alerts.append(st_)
        return res

    async def settle(self, res: SharedReservation, actual_usd: float | None, actual_tokens: int | None) -> bool:
        """Replace the reservation by the real cost; False when this flow was already settled (idempotent)."""
        if res.done or not res.counters:
            return False
        res.done = True
        return await self.store.settle(
            res.flow, res.settle_args, int(round(max(0.0, actual_usd or 0.0) * MICRO)),
            max(0, int(actual_tokens or 0)),
        )  # fmt: skip

    async def release(self, res: SharedReservation) -> None:
        if res.done or not res.counters:
            return
        res.done = True
        await self.store.release(res.flow, [ck for _, _, ck in res.counters])

    async def statuses(self, values: list[tuple[BudgetSpec, str]], now: float) -> list[BudgetStatus]:
        """The fleet's view of these counters: spend and live reservations as Redis holds them."""
        out = []
        for spec, value in values:
            ck, _, (rolling_ms, bucket_ms, _), resets = self._where(spec, value, now)
            su, st, sr, ru, rt, rr = await self.store.read(ck, rolling_ms, bucket_ms)
            out.append(_status(spec, value, Amount(su / MICRO, st, sr), Amount(ru / MICRO, rt, rr), resets))
        return out

    def seed_entries(self, book: BudgetBook, now: float) -> list[tuple[str, str, int, int]]:
        """A ledger's spend (a book rebuilt from it) as additions to the shared counters."""
        entries: list[tuple[str, str, int, int]] = []
        for (_, value), c in book.counters.items():
            spec = c.spec
            ck, _, (rolling_ms, bucket_ms, ttl), _ = self._where(spec, value, now)
            if spec.rolling is None:
                spent = c.spent(now)
                entries += [(ck.spent, f, v, ttl) for f, v in _fields(spent) if v]
            else:
                for start, amt in c._buckets:
                    idx = math.floor(start * 1000 / bucket_ms)
                    entries += [(ck.spent, f"{idx}:{f}", v, ttl) for f, v in _fields(amt) if v]
        return entries


def _fields(a: Amount) -> list[tuple[str, int]]:
    return [("u", int(round(a.usd * MICRO))), ("t", a.tokens), ("r", a.requests)]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _status(spec: BudgetSpec, value: str, spent: Amount, reserved: Amount, resets: float) -> BudgetStatus:
    committed = spent + reserved
    u = 0.0
    for limit, lim in spec.limits().items():
        u = max(u, math.inf if lim <= 0 else committed.get(limit) / lim)
    return BudgetStatus(
        name=spec.name, scope=spec.scope, scope_value=value, window=spec.window_label,
        spent_usd=round(spent.usd, 10), spent_tokens=spent.tokens, spent_requests=spent.requests,
        reserved_usd=round(reserved.usd, 10), reserved_tokens=reserved.tokens, reserved_requests=reserved.requests,
        limit_usd=spec.usd, limit_tokens=spec.tokens, limit_requests=spec.requests,
        resets_at=resets, utilisation=u, state=_state(spec, u),
    )  # fmt: skip
