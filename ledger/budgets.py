"""Budgets and circuit breakers: pure policy, no proxy. The addons (`addons/budget.py`,
`addons/breakers.py`) are glue around `BudgetBook` here and `turnout.ledger.breakers`.

Config (the `turnout_config` TOML file)
---------------------------------------

```toml
# One [[budgets]] entry per budget. Every limit given is enforced; the first one reached decides.
[[budgets]]
name = "monthly"            # shown in errors, headers, `turnout budgets` (default: scope-window)
scope = "global"            # global | key | team | feature | user | model
window = "month"            # minute | hour | day | month — calendar windows in UTC …
usd = 500.0                 # limit in USD (cost from the ledger's prices)
alert_at = 0.8              # at 80 %: x-turnout-budget header, a log line, an `events` row

[[budgets]]
name = "per-team-daily"
scope = "team"              # without `match`, every team has its own counter with this limit
rolling = "24h"             # … or a rolling window: "90s", "15m", "24h", "7d"
tokens = 2_000_000          # limit in tokens (prompt + completion)
requests = 5000             # limit in requests
alert_at = 0.75
throttle_at = 0.9           # from 90 % on (default: alert_at, or always when neither is set) …
throttle_rpm = 20           # … at most 20 requests a minute for that team (429 budget_throttled)
block = true                # at 100 %: 429 insufficient_quota / budget_exceeded (default true;
                            # false = alert only)

[[budgets]]
name = "search-team"
scope = "team"
match = "search"            # only this team (for scope=key: the api key fingerprint)
window = "day"
usd = 20

[breakers]
loop_threshold = 8          # the same canonical request from the same key more than 8 times …
loop_window = "30s"         # … within 30 s is answered 429 loop_detected until it calms down (0: off)
output_cap = 4096           # clamp max_tokens / max_completion_tokens / max_output_tokens to this
output_cap_features = { summarizer = 512 }   # per-feature ceilings (override output_cap)
cap_when_unset = true       # a request without a max gets the ceiling too (default true)
default_max_output = 4096   # worst case assumed by budget reservations when a request sets no max

[[breakers.spike]]          # token buckets: requests and/or tokens per minute, per scope value
scope = "key"               # global | key | team | feature | user | model
rpm = 600                   # requests per minute (burst = one minute's worth)
tpm = 400_000               # tokens per minute (prompt estimate + max output)

[attribution]               # (parsed by turnout.ledger.attribution)
keys = { "3f9a2b1c0d4e-x7Qz" = "payments" }   # api key fingerprint (or its 12-hex prefix) → team
auto_feature = true         # untagged calls get feature = the template name (default true)

[[attribution.features]]    # first matching rule wins; every condition given must hold
feature = "support-bot"     # (and/or team = "…")
system = "support agent"    # regex searched in the system prompt (case-insensitive)
model = "gpt-4o*"           # glob on the requested model
path = "/v1/chat/*"         # glob on the request path
# template = "you-are-a-*"  # glob on the template name, or an exact template fingerprint
```

Attribution precedence per column: `x-turnout-feature|team|user` header > config (rule, key
label) > body (`safety_identifier`/`user`, `metadata.feature|team|user|project`) > automatic.

How reservations work: before forwarding, a request reserves its worst case — prompt tokens
(tiktoken) × input price + max output tokens (or `default_max_output`) × output price — in every
budget it falls under. A request is admitted while `spent + reserved` is below every limit, so
concurrent requests overshoot a limit by at most what was reserved in flight when it was crossed
(and the total never exceeds the limit plus one worst case). When the response ends the
reservation settles to the real cost (for a stream cut off before its usage came, to turnout's count
of what it was billed: ledger/estimate.py); a failed request (nothing generated) releases it. Models
without a known price reserve and spend 0 USD (their tokens and requests still count).

Calendar windows reset at the UTC boundary. Rolling windows keep spend in 1/120-window buckets
and forget each bucket one window after it closed. On start, spend is rebuilt from the ledger's
`flows` table (cache hits and blocked flows cost nothing and are not counted).
"""

from __future__ import annotations

import calendar
import collections
import datetime as dt
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .durations import format_duration, parse_duration

SCOPES = ("global", "key", "team", "feature", "user", "model")
WINDOWS = ("minute", "hour", "day", "month")
# The ledger column each scope reads when rebuilding from the `flows` table.
SCOPE_COLUMNS = {"key": "api_key_fp", "team": "team", "feature": "feature", "user": "user", "model": "model"}
LIMITS = ("usd", "tokens", "requests")
ROLLING_BUCKETS = 120


# -- windows -------------------------------------------------------------------------------


def window_start(window: str, now: float) -> float:
    """Start of the calendar window (UTC) holding `now`."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    if window == "minute":
        t = t.replace(second=0, microsecond=0)
    elif window == "hour":
        t = t.replace(minute=0, second=0, microsecond=0)
    elif window == "day":
        t = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif window == "month":
        t = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown window {window!r}")
    return t.timestamp()


def window_end(window: str, now: float) -> float:
    """When the calendar window holding `now` resets (UTC)."""
    start = window_start(window, now)
    if window == "minute":
        return start + 60
    if window == "hour":
        return start + 3600
    if window == "day":
        return start + 86400
    t = dt.datetime.fromtimestamp(start, dt.UTC)
    days = calendar.monthrange(t.year, t.month)[1]
    return start + days * 86400


# -- specs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetSpec:
    name: str
    scope: str = "global"
    match: str | None = None  # only this scope value; None: one counter per value
    window: str | None = "day"  # calendar window, or None when rolling
    rolling: float | None = None  # seconds
    usd: float | None = None
    tokens: int | None = None
    requests: int | None = None
    alert_at: float | None = None
    throttle_at: float | None = None
    throttle_rpm: int | None = None
    block: bool = True

    @property
    def window_label(self) -> str:
        if self.rolling is not None:
            return f"rolling {format_duration(self.rolling)}"
        return str(self.window)

    def limits(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in LIMITS if getattr(self, k) is not None}

    def applies(self, props: dict[str, str | None]) -> str | None:
        """The scope value this request counts under, or None when the budget does not apply."""
        if self.scope == "global":
            return "*"
        value = props.get(self.scope)
        if value is None:
            return None
        if self.match is not None and value != self.match:
            return None
        return value


def parse_number(spec: dict[str, Any], key: str, where: str, *, integer: bool = False) -> Any:
    if key not in spec:
        return None
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or not math.isfinite(v):
        raise ValueError(f"{where}: {key} must be a non-negative number, got {v!r}")
    if integer:
        if v != int(v):
            raise ValueError(f"{where}: {key} must be a whole number, got {v!r}")
        return int(v)
    return float(v)


def _fraction(spec: dict[str, Any], key: str, where: str) -> float | None:
    v = parse_number(spec, key, where)
    if v is not None and not 0 <= v <= 1:
        raise ValueError(f"{where}: {key} is a fraction of the limit, between 0 and 1 (got {v})")
    return v


_SPEC_KEYS = {"name", "scope", "match", "window", "rolling", *LIMITS, "alert_at", "throttle_at", "throttle_rpm", "block"}


def parse_budgets(entries: Any) -> list[BudgetSpec]:
    """The `[[budgets]]` array of tables; raises ValueError naming the entry and key."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError("budgets must be an array of tables: [[budgets]]")
    out: list[BudgetSpec] = []
    names: set[str] = set()
    for i, spec in enumerate(entries):
        where = f"[[budgets]] #{i + 1}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a table")
        if isinstance(spec.get("name"), str):
            where = f"[[budgets]] {spec['name']!r}"
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(_SPEC_KEYS)}")
        scope = spec.get("scope", "global")
        if scope not in SCOPES:
            raise ValueError(f"{where}: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if "window" in spec and "rolling" in spec:
            raise ValueError(f"{where}: give either window or rolling, not both")
        rolling = None
        window: str | None = spec.get("window", "day")
        if "rolling" in spec:
            rolling = parse_duration(spec["rolling"])
            if rolling <= 0:
                raise ValueError(f"{where}: rolling must be longer than 0s")
            window = None
        elif window not in WINDOWS:
            raise ValueError(f"{where}: window must be one of {', '.join(WINDOWS)} (or use rolling = \"24h\"), got {window!r}")
        usd = parse_number(spec, "usd", where)
        tokens = parse_number(spec, "tokens", where, integer=True)
        requests = parse_number(spec, "requests", where, integer=True)
        throttle_rpm = parse_number(spec, "throttle_rpm", where, integer=True)
        if usd is None and tokens is None and requests is None and throttle_rpm is None:
            raise ValueError(f"{where}: needs a limit: usd, tokens and/or requests (or throttle_rpm)")
        alert_at = _fraction(spec, "alert_at", where)
        throttle_at = _fraction(spec, "throttle_at", where)
        if throttle_at is not None and throttle_rpm is None:
            raise ValueError(f"{where}: throttle_at needs throttle_rpm")
        if throttle_rpm is not None and throttle_at is None:
            throttle_at = alert_at if alert_at is not None else 0.0
        block = spec.get("block", True)
        if not isinstance(block, bool):
            raise ValueError(f"{where}: block must be true or false")
        match = spec.get("match")
        if match is not None and (not isinstance(match, str) or scope == "global"):
            raise ValueError(f"{where}: match must be a string, for a scope other than global")
        default_name = f"{scope}{'-' + match if match else ''}-{spec.get('window') or spec.get('rolling')}"
        name = spec.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name must be a non-empty string")
        if name in names:
            raise ValueError(f"{where}: duplicate budget name {name!r}")
        names.add(name)
        out.append(
            BudgetSpec(
                name=name, scope=scope, match=match, window=window, rolling=rolling,
                usd=usd, tokens=tokens, requests=requests,
                alert_at=alert_at, throttle_at=throttle_at, throttle_rpm=throttle_rpm, block=block,
            )
        )  # fmt: skip
    return out


# -- counters --------------------------------------------------------------------------------


class Amount(NamedTuple):
    usd: float = 0.0
    tokens: int = 0
    requests: int = 0

    def __add__(self, other: Any) -> "Amount":  # type: ignore[override]
        return Amount(self.usd + other.usd, self.tokens + other.tokens, self.requests + other.requests)

    def __sub__(self, other: "Amount") -> "Amount":
        return Amount(max(0.0, self.usd - other.usd), max(0, self.tokens - other.tokens), max(0, self.requests - other.requests))

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
    if throttled or (spec.throttle_rpm is not None and spec.throttle_at is not None and u >= spec.throttle_at and spec.limits()):
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
        return any(
            (s.usd is not None or s.tokens is not None) and s.applies(props) is not None for s in self.specs
        )

    def reserve(self, props: dict[str, str | None], usd: float, tokens: int, now: float | None = None) -> BudgetReservation:
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

    def settle(self, res: BudgetReservation, actual_usd: float | None, actual_tokens: int | None, now: float | None = None) -> None:
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
        starts = [now - s.rolling if s.rolling is not None else window_start(s.window or "day", now) for s in self.specs]
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
        sql = (
            "select started_at, cost_usd, prompt_tokens, completion_tokens, api_key_fp, team, feature, user, model "
            "from flows where started_at >= ? and blocked_by is null and (cache is null or cache != 'hit') "
            "and (error is null or prompt_tokens is not null) order by started_at"
        )
        self.counters.clear()
        n = 0
        for started, cost, pt, ct, key, team, feature, user, model in conn.execute(sql, (since,)):
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


# -- worst-case estimate ---------------------------------------------------------------------

OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
MESSAGE_OVERHEAD = 4  # per message, as the chat format wraps each one (plus 3 for the reply's priming)


def prompt_text(body: Any) -> tuple[str, int]:
    """The text a request sends as its prompt, and the number of messages in it (for overhead)."""
    if not isinstance(body, dict):
        return "", 0
    parts: list[str] = []
    n = 0

    def add(content: Any) -> None:
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for p in content:
                if isinstance(p, dict):
                    for k in ("text", "input_text", "content", "output", "arguments"):
                        if isinstance(p.get(k), str):
                            parts.append(p[k])
                elif isinstance(p, str):
                    parts.append(p)
        elif content is not None:
            parts.append(json.dumps(content, ensure_ascii=False))

    for key in ("messages", "input"):
        items = body.get(key)
        if isinstance(items, list):
            for m in items:
                n += 1
                if isinstance(m, dict):
                    add(m.get("content"))
                    if m.get("tool_calls"):
                        add(json.dumps(m["tool_calls"], ensure_ascii=False))
                    if isinstance(m.get("output"), str):
                        parts.append(m["output"])
                else:
                    add(m)
        elif items is not None:
            add(items)
            n += 1
    for key in ("instructions", "system", "prompt"):
        if key in body:
            add(body[key])
            n += 1
    if body.get("tools"):
        parts.append(json.dumps(body["tools"], ensure_ascii=False))
    return "\n".join(parts), n


def prompt_tokens(body: Any, model: str | None = None) -> int:
    """Prompt tokens by tiktoken in `model`'s encoding (the body's model by default), plus the chat
    format's per-message overhead."""
    from turnout.router.tokens import count_tokens

    if model is None and isinstance(body, dict) and isinstance(body.get("model"), str):
        model = body["model"]
    text, n = prompt_text(body)
    return count_tokens(text, model) + message_overhead(n)


def message_overhead(messages: int) -> int:
    """Tokens the chat format adds around `messages` messages (their text aside)."""
    return MESSAGE_OVERHEAD * messages + (3 if messages else 0)


def max_output(body: Any, default: int) -> int:
    """The output ceiling the request itself sets (the smallest, if several), else `default`."""
    if not isinstance(body, dict):
        return default
    values = [v for k in OUTPUT_FIELDS if isinstance(v := body.get(k), int) and not isinstance(v, bool) and v >= 0]
    n = body.get("n")
    mult = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return (min(values) if values else default) * mult


def worst_case(prompt: int, output: int, rates: Any) -> float:
    """USD of `prompt` input tokens + `output` output tokens at `rates` (a ModelRates, or None: 0)."""
    if rates is None:
        return 0.0
    return rates.worst_case(prompt, output)
