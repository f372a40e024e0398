"""The `[shadow]` config table: shadow evaluations of routing decisions (docs/shadow.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from turnout.ledger.durations import parse_duration


@dataclass(frozen=True)
class ShadowConfig:
    enabled: bool = True
    sample: float = 0.05  # fraction of would-route calls shadowed (observe) / routed calls shadowed (monitor)
    explore: float = 0.01  # fraction of kept calls shadowed: evidence from both sides of the threshold
    usd_per_day: float = 1.0  # hard cap on what shadows and judges spend, reserved before each call
    judge_model: str | None = None  # free-text verdicts need a judge; without one they are `unknown`
    judge_provider: str | None = None  # default: the shadowed call's provider (and its key)
    judge_api_key_env: str | None = None  # the judge's key when it is another provider's
    never_features: frozenset[str] = field(default_factory=frozenset)
    timeout: float = 30.0  # seconds, per shadow or judge call
    concurrency: int = 4
    max_queued: int = 64
    max_output: int = 4096  # output ceiling set on a shadow call whose request sets none (bounds the cap)
    tool_args: str = "exact"  # exact | keys: how tool-call arguments are compared
    auto_revert: bool = False  # monitor: stop routing a group whose measured quality falls below target
    window: int = 200  # monitor: the rolling window of verdicts per group
    # monitor: verdicts before a group can be judged degraded or recovered; the bound is checked after every
    # verdict, so a small number would flag healthy groups on an early run of bad luck
    min_evals: int = 50


KEYS = frozenset(ShadowConfig.__dataclass_fields__)


def _fraction(table: dict[str, Any], key: str, default: float) -> float:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise ValueError(f"[shadow] {key} must be a fraction between 0 and 1, not {v!r}")
    return float(v)


def _positive(table: dict[str, Any], key: str, default: float, *, integer: bool = False) -> Any:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"[shadow] {key} must be a non-negative number, not {v!r}")
    if integer and (v != int(v) or v < 1):
        raise ValueError(f"[shadow] {key} must be a whole number ≥ 1, not {v!r}")
    return int(v) if integer else float(v)


def _str(table: dict[str, Any], key: str) -> str | None:
    v = table.get(key)
    if v is not None and (not isinstance(v, str) or not v):
        raise ValueError(f"[shadow] {key} must be a non-empty string, not {v!r}")
    return v


def parse_shadow(table: dict[str, Any]) -> ShadowConfig:
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ValueError(f"[shadow]: unknown key(s) {unknown}; expected some of {sorted(KEYS)}")
    for key in ("enabled", "auto_revert"):
        if key in table and not isinstance(table[key], bool):
            raise ValueError(f"[shadow] {key} must be true or false, not {table[key]!r}")
    never = table.get("never_features", [])
    if not isinstance(never, list) or not all(isinstance(f, str) for f in never):
        raise ValueError("[shadow] never_features must be a list of feature names")
    tool_args = table.get("tool_args", "exact")
    if tool_args not in ("exact", "keys"):
        raise ValueError(f"[shadow] tool_args must be exact or keys, not {tool_args!r}")
    timeout = table.get("timeout", 30.0)
    try:
        timeout = parse_duration(timeout)
    except ValueError as e:
        raise ValueError(f"[shadow] timeout: {e}") from None
    if not 0 < timeout <= 600:
        raise ValueError(f"[shadow] timeout must be in (0, 600] seconds, not {timeout}")
    judge_provider = _str(table, "judge_provider")
    if judge_provider is not None and judge_provider not in ("openai", "anthropic"):
        raise ValueError(f"[shadow] judge_provider must be openai or anthropic, not {judge_provider!r}")
    return ShadowConfig(
        enabled=table.get("enabled", True),
        sample=_fraction(table, "sample", 0.05),
        explore=_fraction(table, "explore", 0.01),
        usd_per_day=_positive(table, "usd_per_day", 1.0),
        judge_model=_str(table, "judge_model"),
        judge_provider=judge_provider,
        judge_api_key_env=_str(table, "judge_api_key_env"),
        never_features=frozenset(never),
        timeout=timeout,
        concurrency=_positive(table, "concurrency", 4, integer=True),
        max_queued=_positive(table, "max_queued", 64, integer=True),
        max_output=_positive(table, "max_output", 4096, integer=True),
        tool_args=tool_args,
        auto_revert=table.get("auto_revert", False),
        window=_positive(table, "window", 200, integer=True),
        min_evals=_positive(table, "min_evals", 50, integer=True),
    )
