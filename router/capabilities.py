"""What each cheaper model can do, for the "never route" capability rule.

Feature tags come from :attr:`RequestFeatures.uses`. A request is only routed
to a model whose entry lists every tag the request uses, so the table is
deliberately conservative: a model missing from it, or a tag we are unsure a
model supports, means "do not route". Stateful features that tie a request to
the model that produced earlier state (``previous_response``,
``reasoning_items``, ``item_reference``, ``background``) and audio are listed
for no model, so such requests are never routed. Anthropic's server-side tools
(web search, code execution, computer use…) are listed for no model either: a
cheaper rung's support for each is not something to assume.

Users can extend or override entries with ``[router.capabilities]``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from .ladders import base_model

V = TypeVar("V")

KNOWN_TAGS: frozenset[str] = frozenset(
    {
        "images",
        "files",
        "audio",
        "tools",
        "web_search",
        "builtin_tools",
        "json_schema",
        "json_object",
        "reasoning_effort",
        "verbosity",
        "prediction",
        "logprobs",
        "previous_response",
        "reasoning_items",
        "item_reference",
        "background",
        "thinking",
    }
)

_CHAT = frozenset({"images", "files", "tools", "json_schema", "json_object", "logprobs"})

DEFAULT_CAPABILITIES: dict[str, frozenset[str]] = {
    "gpt-4o-mini": _CHAT | {"prediction"},
    "gpt-4.1-mini": _CHAT | {"prediction"},
    "gpt-4.1-nano": _CHAT | {"prediction"},
    # reasoning models: reasoning_effort yes; no logprobs, no predicted outputs
    "o4-mini": frozenset({"images", "files", "tools", "json_schema", "json_object", "reasoning_effort"}),
    "gpt-5-mini": frozenset(
        {"images", "files", "tools", "json_schema", "json_object", "reasoning_effort", "verbosity"}
    ),
    "gpt-5-nano": frozenset(
        {"images", "files", "tools", "json_schema", "json_object", "reasoning_effort", "verbosity"}
    ),
    # Anthropic Messages API: images and PDF documents, client tools, extended thinking
    **dict.fromkeys(
        (
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-sonnet-4-6",
            "claude-sonnet-5",
            "claude-sonnet-5-5",
            "claude-haiku-5-5",
        ),
        frozenset({"images", "files", "tools", "thinking"}),
    ),
    # Gemini 2.5: images, PDFs and other files, function calling, JSON mode and schemas, thinking;
    # 2.0 Flash-Lite: no thinking
    **dict.fromkeys(
        ("gemini-2.5-flash", "gemini-2.5-flash-lite"),
        frozenset({"images", "files", "tools", "json_schema", "json_object", "thinking"}),
    ),
    "gemini-2.0-flash-lite": frozenset({"images", "files", "tools", "json_schema", "json_object"}),
}

TAG_REASONS: dict[str, str] = {
    "images": "uses images",
    "files": "uses file inputs",
    "audio": "uses audio",
    "tools": "uses tools",
    "web_search": "uses web search",
    "builtin_tools": "uses built-in tools",
    "json_schema": "uses structured outputs (json_schema)",
    "json_object": "uses JSON mode",
    "reasoning_effort": "uses reasoning_effort",
    "verbosity": "uses verbosity",
    "prediction": "uses predicted outputs",
    "logprobs": "uses logprobs",
    "previous_response": "continues a stored response/conversation",
    "reasoning_items": "carries reasoning items",
    "item_reference": "references stored items",
    "background": "is a background request",
    "thinking": "uses extended thinking",
    "unreadable": "could not be analysed",  # features.UNREADABLE: on no model, and not configurable
}


# The most output tokens a cheaper rung accepts: a request asking for more is not routed to it (the
# provider would answer 400). Only what is documented; `[router.max_output]` adds or overrides.
DEFAULT_MAX_OUTPUT: dict[str, int] = {
    "gpt-4o-mini": 16_384,
    "gpt-4.1-mini": 32_768,
    "gpt-4.1-nano": 32_768,
    "o4-mini": 100_000,
    "gpt-5-mini": 128_000,
    "gpt-5-nano": 128_000,
    "claude-haiku-4-5": 64_000,
    "gemini-2.5-flash": 65_536,
    "gemini-2.5-flash-lite": 65_536,
    "gemini-2.0-flash-lite": 8_192,
}


def _per_model_table(
    raw: Any, defaults: Mapping[str, V], key: str, shape: str, value: Callable[[str, Any], V]
) -> dict[str, V]:
    """`[router.<key>]`: the defaults, with each configured model (by its base name) added or replaced.
    `value(where, v)` checks one entry and returns what to keep, raising ValueError naming `where`."""
    table = dict(defaults)
    if raw is None:
        return table
    if not isinstance(raw, Mapping):
        raise ValueError(f"router.{key} must be a table of {shape}")
    for model, v in raw.items():
        if not isinstance(model, str):
            raise ValueError(f"router.{key}: model names must be strings, got {model!r}")
        table[base_model(model)] = value(f"router.{key}.{model}", v)
    return table


def _tokens(where: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"{where}: expected a positive number of tokens, got {n!r}")
    return n


def _tags(where: str, tags: Any) -> frozenset[str]:
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"{where}: expected a list of capability names, got {tags!r}")
    unknown = sorted(set(tags) - KNOWN_TAGS)
    if unknown:
        raise ValueError(f"{where}: unknown capability {unknown}; known: {sorted(KNOWN_TAGS)}")
    return frozenset(tags)


def parse_max_output(raw: Any) -> dict[str, int]:
    return _per_model_table(raw, DEFAULT_MAX_OUTPUT, "max_output", "model = tokens", _tokens)


def parse_capabilities(raw: Any) -> dict[str, frozenset[str]]:
    return _per_model_table(raw, DEFAULT_CAPABILITIES, "capabilities", 'model = ["images", "tools", ...]', _tags)


def missing_capabilities(uses: frozenset[str], model: str, caps: Mapping[str, frozenset[str]]) -> list[str]:
    """Tags the request uses that ``model`` is not known to support (sorted)."""
    if not uses:
        return []
    have = caps.get(base_model(model), frozenset())
    return sorted(uses - have)
