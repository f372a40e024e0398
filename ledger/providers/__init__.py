"""Provider modules, looked up by the host a request was sent to."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from . import anthropic, gemini, openai

PROVIDERS: dict[str, ModuleType] = {openai.name: openai, anthropic.name: anthropic, gemini.name: gemini}
# every host turnout knows, intercepted by default
KNOWN_HOSTS: tuple[str, ...] = tuple(h for p in PROVIDERS.values() for h in p.hosts)


def provider_for_host(host: str) -> str | None:
    """The provider whose public API lives at `host`, if any."""
    host = host.lower()
    return next((p.name for p in PROVIDERS.values() if host in p.hosts), None)


def parse_hosts(values: Sequence[str]) -> dict[str, str]:
    """`host` or `host=provider` entries to {host: provider}; raises ValueError on an unknown provider."""
    out: dict[str, str] = {}
    for value in values:
        host, _, provider = value.partition("=")
        host = host.strip().lower()
        # a known provider host needs no `=provider`; anything else speaks OpenAI's API unless told
        provider = provider.strip() or provider_for_host(host) or "openai"
        if not host or "/" in host or ":" in host:
            raise ValueError(f"not a host name: {value!r}")
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r} for {host} (known: {sorted(PROVIDERS)})")
        out[host] = provider
    return out
