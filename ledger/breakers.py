"""Circuit breakers: pure policy for the retry-loop breaker, the spike limiter and the output cap.

`addons/breakers.py` is the glue. The `[breakers]` config table is documented in
docs/config.md, next to the budgets it complements.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .budget_specs import SCOPES, parse_number
from .request_size import OUTPUT_FIELDS
from .durations import parse_duration
from .canonical import canonical_request


def request_fingerprint(endpoint: str | None, body: Any) -> str:
    """Same request, same fingerprint: the cache's canonical form (who-is-asking and transport fields dropped)."""
    canon: Any = body
    if isinstance(body, dict):
        model = body.get("model")
        canon = canonical_request(endpoint or "", body, model if isinstance(model, str) else None)
    raw = json.dumps([endpoint, canon], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


class LoopDetector:
    """More than `threshold` identical requests from one key within `window` seconds is a retry loop.

    Every attempt counts, refused ones too: the loop stays broken until the client calms down
    to at most `threshold` attempts per window.
    """

    def __init__(self, threshold: int, window: float, max_keys: int = 100_000) -> None:
        self.threshold = threshold
        self.window = window
        self.max_keys = max_keys
        self.seen: dict[tuple[str, str], collections.deque[float]] = {}

    @property
    def enabled(self) -> bool:
        return self.threshold > 0 and self.window > 0

    def hit(self, key: str | None, fingerprint: str, now: float) -> bool:
        """Count one attempt; True when it is over the threshold (refuse it)."""
        if not self.enabled:
            return False
        k = (key or "-", fingerprint)
        times = self.seen.get(k)
        if times is None:
            if len(self.seen) >= self.max_keys:
                self.prune(now)
            times = self.seen[k] = collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        return len(times) > self.threshold

    def prune(self, now: float) -> None:
        for k in [k for k, t in self.seen.items() if not t or t[-1] <= now - self.window]:
            del self.seen[k]
        if len(self.seen) >= self.max_keys:  # still full of live keys: forget the oldest half
            for k in sorted(self.seen, key=lambda k: self.seen[k][-1])[: len(self.seen) // 2]:
                del self.seen[k]


class TokenBucket:
    """`rate_per_minute` refilled continuously, holding at most one minute's worth (the burst)."""

    def __init__(self, rate_per_minute: float, now: float) -> None:
        self.capacity = float(rate_per_minute)
        self.rate = rate_per_minute / 60.0
        self.level = self.capacity
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
            self.at = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.level

    def take(self, amount: float, now: float) -> bool:
        """Take `amount` if there is that much (a request bigger than the burst needs a full bucket)."""
        self._refill(now)
        need = min(amount, self.capacity)
        if self.level + 1e-9 < need:
            return False
        self.level -= amount if amount <= self.capacity else self.capacity
        return True

    def retry_after(self, amount: float, now: float) -> float:
        self._refill(now)
        need = min(amount, self.capacity) - self.level
        return max(0.0, need / self.rate) if self.rate > 0 else math.inf


@dataclass(frozen=True)
class SpikeSpec:
    scope: str
    rpm: float | None = None
    tpm: float | None = None


class SpikeLimiter:
    """Token buckets (requests and tokens per minute) per scope value."""

    def __init__(self, specs: Iterable[SpikeSpec], *, sweep_threshold: int = 50_000) -> None:
        self.specs = list(specs)
        self.buckets: dict[tuple[int, str, str], TokenBucket] = {}
        self.sweep_threshold = sweep_threshold
        self._sweep_at = sweep_threshold

    def _bucket(self, i: int, kind: str, value: str, rate: float, now: float) -> TokenBucket:
        b = self.buckets.get((i, kind, value))
        if b is None:
            if len(self.buckets) >= self._sweep_at:
                self.sweep(now)
            b = self.buckets[(i, kind, value)] = TokenBucket(rate, now)
        return b

    def sweep(self, now: float) -> int:
        """Forget full buckets (a fresh one is identical), so memory follows recently active scope values."""
        full = [key for key, b in self.buckets.items() if b.available(now) >= b.capacity]
        for key in full:
            del self.buckets[key]
        self._sweep_at = max(self.sweep_threshold, 2 * len(self.buckets))
        return len(full)

    def buckets_for(
        self, props: dict[str, str | None], tokens: int
    ) -> list[tuple[int, SpikeSpec, str, str, float, float]]:
        """(spec index, spec, value, kind, rate per minute, amount) of every bucket the request falls under."""
        out = []
        for i, spec in enumerate(self.specs):
            value = "*" if spec.scope == "global" else props.get(spec.scope)
            if value is None:
                continue
            for kind, rate, amount in (("rpm", spec.rpm, 1.0), ("tpm", spec.tpm, float(tokens))):
                if rate is not None:
                    out.append((i, spec, value, kind, rate, amount))
        return out

    def check(self, props: dict[str, str | None], tokens: int, now: float) -> tuple[SpikeSpec, str, float] | None:
        """Take one request and `tokens` from every bucket the request falls under; on refusal
        take nothing and return (spec, value, seconds until it would pass)."""
        takes: list[tuple[TokenBucket, float]] = []
        for i, spec, value, kind, rate, amount in self.buckets_for(props, tokens):
            b = self._bucket(i, kind, value, rate, now)
            if b.available(now) + 1e-9 < min(amount, b.capacity):
                return spec, value, b.retry_after(amount, now)
            takes.append((b, amount))
        for b, amount in takes:
            b.take(amount, now)
        return None


def parse_spikes(entries: Any) -> list[SpikeSpec]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError("[breakers] spike must be an array of tables: [[breakers.spike]]")
    out = []
    for i, spec in enumerate(entries):
        where = f"[[breakers.spike]] #{i + 1}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a table")
        unknown = set(spec) - {"scope", "rpm", "tpm"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        scope = spec.get("scope", "global")
        if scope not in SCOPES:
            raise ValueError(f"{where}: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        rpm, tpm = parse_number(spec, "rpm", where), parse_number(spec, "tpm", where)
        if rpm is None and tpm is None:
            raise ValueError(f"{where}: needs rpm and/or tpm")
        if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
            raise ValueError(f"{where}: rpm/tpm must be above 0")
        out.append(SpikeSpec(scope, rpm, tpm))
    return out


class BreakerConfig(NamedTuple):
    loop_threshold: int = 0
    loop_window: float = 0.0
    output_cap: int | None = None
    output_cap_features: dict[str, int] = {}
    cap_when_unset: bool = True
    default_max_output: int = 4096
    spikes: tuple[SpikeSpec, ...] = ()
    on_state_error: str = "open"  # shared state unreachable: admit ("open") or refuse with 503 ("closed")

    def cap_for(self, feature: str | None) -> int | None:
        if feature is not None and feature in self.output_cap_features:
            return self.output_cap_features[feature]
        return self.output_cap


_BREAKER_KEYS = {
    "loop_threshold",
    "loop_window",
    "output_cap",
    "output_cap_features",
    "cap_when_unset",
    "default_max_output",
    "spike",
    "on_state_error",
}


def parse_breakers(table: dict[str, Any]) -> BreakerConfig:
    """The `[breakers]` table; raises ValueError naming the key."""
    where = "[breakers]"
    unknown = set(table) - _BREAKER_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(_BREAKER_KEYS)}")
    loop_threshold = parse_number(table, "loop_threshold", where, integer=True) or 0
    loop_window = parse_duration(table["loop_window"]) if "loop_window" in table else (30.0 if loop_threshold else 0.0)
    output_cap = parse_number(table, "output_cap", where, integer=True)
    feats = table.get("output_cap_features", {})
    if not isinstance(feats, dict):
        raise ValueError(f"{where}: output_cap_features must be a table of feature = tokens")
    caps = {str(k): parse_number(feats, k, f"{where} output_cap_features", integer=True) for k in feats}
    cap_when_unset = table.get("cap_when_unset", True)
    if not isinstance(cap_when_unset, bool):
        raise ValueError(f"{where}: cap_when_unset must be true or false")
    default_max = parse_number(table, "default_max_output", where, integer=True)
    on_state_error = table.get("on_state_error", "open")
    if on_state_error not in ("open", "closed"):
        raise ValueError(f'{where}: on_state_error must be "open" or "closed", got {on_state_error!r}')
    return BreakerConfig(
        on_state_error=on_state_error,
        loop_threshold=loop_threshold,
        loop_window=loop_window,
        output_cap=output_cap,
        output_cap_features=caps,
        cap_when_unset=cap_when_unset,
        default_max_output=4096 if default_max is None else default_max,
        spikes=tuple(parse_spikes(table.get("spike"))),
    )


# The field a request gets when it sets no ceiling at all (and cap_when_unset is on).
UNSET_FIELD = {"chat": "max_completion_tokens", "responses": "max_output_tokens", "completions": "max_tokens"}


def clamp_output(endpoint: str | None, body: Any, cap: int | None, *, when_unset: bool = True) -> str | None:
    """Clamp the request's output ceiling(s) to `cap` in place; return what changed
    (`"max_tokens 100000→4096"`) or None."""
    if cap is None or not isinstance(body, dict) or endpoint not in UNSET_FIELD:
        return None
    changes = []
    present = False
    for k in OUTPUT_FIELDS:
        v = body.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            present = True
            if v > cap:
                body[k] = cap
                changes.append(f"{k} {v}→{cap}")
    if not present and when_unset:
        k = UNSET_FIELD[endpoint]
        body[k] = cap
        changes.append(f"{k} unset→{cap}")
    return ", ".join(changes) or None
