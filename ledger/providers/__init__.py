"""Provider modules, looked up by the host a request was sent to."""

from __future__ import annotations

from types import ModuleType

from . import anthropic, openai

PROVIDERS: dict[str, ModuleType] = {openai.name: openai, anthropic.name: anthropic}


def provider_for_host(host: str) -> str | None:
    """The provider whose public API lives at `host`, if any."""
    host = host.lower()
    return next((p.name for p in PROVIDERS.values() if host in p.hosts), None)
