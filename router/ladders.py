"""Model ladders: for each provider, chains of models from strong to cheap.

A request for a model on a ladder may be routed one rung down (never more:
each rung is a product decision the user made, and the difficulty model is
trained on one strong/weak pair). Dated snapshots (``gpt-4o-2024-08-06``,
``gpt-4-0613``, ``claude-sonnet-4-5-20250929``) resolve to their base name's
ladder; the cheaper model is sent as the ladder names it — the defaults name
aliases, which track the provider's current snapshot; a configured ladder may
pin a dated one.

The default Anthropic ladders step down within one model generation (Opus →
Sonnet → Haiku of the same version), as the OpenAI ones stay within a family
and the Gemini ones within a version (pro → flash → flash-lite), and never onto
a model the provider has announced it will retire.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

DEFAULT_LADDERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "openai": (
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"),
        ("o3", "o4-mini"),
        ("gpt-5", "gpt-5-mini", "gpt-5-nano"),
    ),
    "anthropic": (
        ("claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"),
        ("claude-opus-5", "claude-sonnet-5"),
        ("claude-opus-4-6", "claude-sonnet-4-6"),
        ("claude-sonnet-4-5", "claude-haiku-4-5"),  # nothing is routed *to* Sonnet 4.5: retired 2026-11-30
    ),
    "gemini": (
        ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"),
        ("gemini-2.0-flash", "gemini-2.0-flash-lite"),
    ),
}

_SNAPSHOT_RE = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


def base_model(model: str) -> str:
    """``gpt-4o-2024-08-06`` -> ``gpt-4o``, ``claude-haiku-4-5-20251001`` -> ``claude-haiku-4-5``;
    other names unchanged (lower-cased, stripped)."""
    name = model.strip().lower()
    m = _SNAPSHOT_RE.match(name)
    return m.group("base") if m else name


def parse_ladders(raw: Any) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Validate ``[router.ladders]``: ``{provider: [[strong, cheaper, ...], ...]}``.

    A provider listed here replaces that provider's defaults; others keep them.
    """
    ladders = dict(DEFAULT_LADDERS)
    if raw is None:
        return ladders
    if not isinstance(raw, Mapping):
        raise ValueError("router.ladders must be a table of provider = [[strong, cheaper, ...], ...]")
    for provider, chains in raw.items():
        if not isinstance(provider, str) or not provider:
            raise ValueError(f"router.ladders: provider name must be a non-empty string, got {provider!r}")
        if not isinstance(chains, (list, tuple)):
            raise ValueError(
                f'router.ladders.{provider} must be a list of model lists, e.g. [["gpt-4o", "gpt-4o-mini"]]'
            )
        parsed = []
        for chain in chains:
            if (
                not isinstance(chain, (list, tuple))
                or len(chain) < 2
                or not all(isinstance(m, str) and m.strip() for m in chain)
            ):
                raise ValueError(
                    f"router.ladders.{provider}: each ladder must list at least two model names, strong first; got {chain!r}"
                )
            parsed.append(tuple(m.strip().lower() for m in chain))  # dates kept: a pinned snapshot stays pinned
        ladders[provider] = tuple(parsed)
    for provider, chains in ladders.items():
        seen: dict[str, str] = {}  # base name -> its next rung
        for chain in chains:
            bases = [base_model(m) for m in chain]
            if len(set(bases)) != len(bases):
                raise ValueError(f"router.ladders.{provider}: ladder {list(chain)} repeats a model")
            for i, m in enumerate(bases[:-1]):
                if m in seen and seen[m] != chain[i + 1]:
                    raise ValueError(
                        f"router.ladders.{provider}: model {m!r} appears on two ladders with different next rungs"
                    )
                seen[m] = chain[i + 1]
    return ladders


def rung_index(ladders: Mapping[str, tuple[tuple[str, ...], ...]]) -> dict[str, dict[str, str]]:
    """``{provider: {base name: next rung}}``: one dict lookup per request."""
    return {
        provider: {base_model(m): chain[i + 1] for chain in chains for i, m in enumerate(chain[:-1])}
        for provider, chains in ladders.items()
    }
