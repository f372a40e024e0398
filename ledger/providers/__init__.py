"""Provider modules, looked up by the host a request was sent to."""

from __future__ import annotations

from types import ModuleType

from . import openai

PROVIDERS: dict[str, ModuleType] = {openai.name: openai}


def for_host(host: str, extra_hosts: dict[str, str] | None = None) -> ModuleType | None:
    """The provider serving `host`; `extra_hosts` maps further hosts (e.g. an Azure endpoint) to a provider name."""
    host = host.lower()
    for provider in PROVIDERS.values():
        if host in provider.hosts:
            return provider
    if extra_hosts and host in extra_hosts:
        return PROVIDERS.get(extra_hosts[host])
    return None
