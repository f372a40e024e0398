"""`[[failover]]` rules and `[providers.NAME]` credentials, parsed and checked at start.

```toml
[[failover]]
from = "openai"                       # a provider, or provider:model glob ("openai:gpt-4o*")
to = ["anthropic:claude-sonnet-4-5", "gemini:gemini-2.5-flash"]   # tried in order
on = ["5xx", "429", "connect", "timeout"]
first_byte_timeout = "20s"            # a stream's headers and first content
timeout = "600s"                      # a non-streamed answer's headers (they come once it is all written)

[providers.anthropic]
api_key_env = "ANTHROPIC_API_KEY"     # the fallback's key: read from the proxy's environment, never stored

[failover_circuit]                    # per provider: open after `failures` in `window`, probe after `cooldown`
failures = 5
window = "60s"
cooldown = "30s"
```
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .durations import parse_duration

FAILURES = frozenset({"5xx", "429", "connect", "timeout"})
FORMAT_OF = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}  # provider -> wire format


@dataclass(frozen=True)
class Target:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class FailoverRule:
    provider: str
    model_glob: str  # "*" for every model of the provider
    targets: tuple[Target, ...]
    on: frozenset[str]
    first_byte_timeout: float
    timeout: float = 600.0

    def matches(self, provider: str, model: str | None) -> bool:
        return provider == self.provider and fnmatch.fnmatchcase((model or "").lower(), self.model_glob)


@dataclass(frozen=True)
class CircuitConfig:
    failures: int = 5
    window: float = 60.0
    cooldown: float = 30.0


@dataclass(frozen=True)
class FailoverConfig:
    rules: tuple[FailoverRule, ...] = ()
    key_env: Mapping[str, str] = None  # type: ignore[assignment]  # provider -> environment variable
    circuit: CircuitConfig = CircuitConfig()

    def rule_for(self, provider: str, model: str | None) -> FailoverRule | None:
        return next((r for r in self.rules if r.matches(provider, model)), None)

    def api_key(self, provider: str) -> str | None:
        """The fallback key for `provider`, read now from the environment (so a rotated key is picked up)."""
        env = (self.key_env or {}).get(provider)
        return os.environ.get(env) or None if env else None


def parse_failover(rules: Any, providers: Any, circuit: Any, known: frozenset[str]) -> FailoverConfig:
    """Raises ValueError naming the rule and field."""
    parsed = []
    for i, rule in enumerate(rules or ()):
        where = f"failover[{i}]"
        if not isinstance(rule, Mapping):
            raise ValueError(f"{where}: expected a table")
        unknown = set(rule) - {"from", "to", "on", "first_byte_timeout", "timeout"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        source = rule.get("from")
        if not isinstance(source, str) or not source:
            raise ValueError(f'{where}.from: expected "provider" or "provider:model-glob"')
        provider, _, glob = source.partition(":")
        if provider not in known:
            raise ValueError(f"{where}.from: unknown provider {provider!r} (known: {sorted(known)})")
        targets = []
        for t in rule.get("to") or ():
            if not isinstance(t, str) or ":" not in t:
                raise ValueError(f'{where}.to: expected "provider:model" entries, got {t!r}')
            tp, _, tm = t.partition(":")
            if tp not in known or not tm:
                raise ValueError(f"{where}.to: unknown provider in {t!r} (known: {sorted(known)})")
            targets.append(Target(tp, tm))
        if not targets:
            raise ValueError(f"{where}.to: name at least one target")
        on = rule.get("on", sorted(FAILURES))
        if not isinstance(on, list) or not set(on) <= FAILURES or not on:
            raise ValueError(f"{where}.on: a list of {sorted(FAILURES)}, got {on!r}")
        first = parse_duration(rule.get("first_byte_timeout", "20s"))
        whole = parse_duration(rule.get("timeout", "600s"))
        if first <= 0 or whole <= 0:
            raise ValueError(f"{where}: first_byte_timeout and timeout must be positive")
        parsed.append(FailoverRule(provider, (glob or "*").lower(), tuple(targets), frozenset(on), first, whole))
    key_env: dict[str, str] = {}
    for name, table in (providers or {}).items():
        if name not in known:
            raise ValueError(f"providers.{name}: unknown provider (known: {sorted(known)})")
        if not isinstance(table, Mapping) or set(table) - {"api_key_env"}:
            raise ValueError(f'providers.{name}: expected {{api_key_env = "ENV_VAR"}}')
        env = table.get("api_key_env")
        if not isinstance(env, str) or not env:
            raise ValueError(f"providers.{name}.api_key_env: the name of an environment variable")
        key_env[name] = env
    c = circuit or {}
    if not isinstance(c, Mapping) or set(c) - {"failures", "window", "cooldown"}:
        raise ValueError("failover_circuit: expected failures, window, cooldown")
    failures = c.get("failures", 5)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        raise ValueError("failover_circuit.failures: a positive integer")
    cfg = CircuitConfig(failures, parse_duration(c.get("window", "60s")), parse_duration(c.get("cooldown", "30s")))
    return FailoverConfig(tuple(parsed), key_env, cfg)
