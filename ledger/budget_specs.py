"""The `[[budgets]]` table parsed into `BudgetSpec`s, with errors that name the entry and key.

The reference of every key is in docs/config.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .durations import format_duration, parse_duration
from .windows import WINDOWS

SCOPES = ("global", "key", "team", "feature", "user", "model")
LIMITS = ("usd", "tokens", "requests")


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
    on_state_error: str = "closed"  # shared state unreachable: refuse ("closed") or admit uncounted ("open")

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


_SPEC_KEYS = {
    "name",
    "scope",
    "match",
    "window",
    "rolling",
    *LIMITS,
    "alert_at",
    "throttle_at",
    "throttle_rpm",
    "block",
    "on_state_error",
}


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
            raise ValueError(
                f'{where}: window must be one of {", ".join(WINDOWS)} (or use rolling = "24h"), got {window!r}'
            )
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
        on_state_error = spec.get("on_state_error", "closed" if block else "open")
        if on_state_error not in ("closed", "open"):
            raise ValueError(f'{where}: on_state_error must be "closed" or "open", got {on_state_error!r}')
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
                on_state_error=on_state_error,
            )
        )  # fmt: skip
    return out
