"""How big a request is before it is sent: its prompt tokens, its output ceiling, its worst-case cost.

Budgets reserve the worst case and spike limits take tokens on it; both read it from here.
"""

from __future__ import annotations

import json
from typing import Any

from .messages import request_parts

OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
MESSAGE_OVERHEAD = 4  # per message, as the chat format wraps each one (plus 3 for the reply's priming)


def prompt_text(body: Any) -> tuple[str, int]:
    """The text a request sends as its prompt, and the number of messages in it (for overhead)."""
    parts = request_parts(body)
    texts = [f"{p.name} {p.text}" if p.kind == "tool_call" and p.name else p.text for p in parts if p.text]
    if isinstance(body, dict) and body.get("tools"):
        texts.append(json.dumps(body["tools"], ensure_ascii=False))
    return "\n".join(texts), (parts[-1].msg + 1 if parts else 0)


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
    config = body.get("generationConfig", body.get("generation_config"))  # Gemini
    if isinstance(config, dict):
        body = {"max_tokens": config.get("maxOutputTokens", config.get("max_output_tokens")),
                "n": config.get("candidateCount", config.get("candidate_count"))}  # fmt: skip
    values = [v for k in OUTPUT_FIELDS if isinstance(v := body.get(k), int) and not isinstance(v, bool) and v >= 0]
    n = body.get("n")
    mult = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return (min(values) if values else default) * mult


def worst_case(prompt: int, output: int, rates: Any) -> float:
    """USD of `prompt` input tokens + `output` output tokens at `rates` (a ModelRates, or None: 0)."""
    if rates is None:
        return 0.0
    return rates.worst_case(prompt, output)
