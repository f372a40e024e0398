"""What turnout may send again on its own (a shadow call): never anything with side effects or state.

A shadow repeats the client's request to another model. That is harmless only for a pure
question-and-answer call; these are never repeated (the reason is recorded):
stored or chained Responses (`store: true`, `previous_response_id`, conversations, item
references), background mode, server-side tools (web search, code interpreter, file search, MCP,
computer use, …), signed thinking / reasoning items carried from earlier turns (tied to the model
that made them), audio and realtime, batch / files / fine-tuning / embeddings endpoints, and any
call that was not answered by the provider with a success (cache hits, blocked calls, failures).
"""

from __future__ import annotations

from typing import Any

from .features import UNREADABLE, extract_features

SHADOWABLE = frozenset({"chat", "responses", "completions", "messages"})
_STATEFUL_USES = {
    "previous_response": "chained to a stored response (previous_response_id / conversation)",
    "item_reference": "refers to stored items",
    "background": "background mode",
    "web_search": "server-side tool (web search)",
    "builtin_tools": "server-side tools",
    "reasoning_items": "carries signed thinking / reasoning from earlier turns",
    "audio": "audio",
    UNREADABLE: "the request could not be read",
}


def request_block(endpoint: str | None, body: Any) -> str | None:
    """Why this request must never be shadowed (a short reason), or None."""
    if endpoint not in SHADOWABLE:
        return f"endpoint {endpoint or 'unparsed'} is not shadowed"
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if body.get("store") is True:
        return "store: true (the provider keeps state)"
    uses = extract_features(body).uses
    for use, reason in _STATEFUL_USES.items():
        if use in uses:
            return reason
    return None


def answer_block(row: dict[str, Any]) -> str | None:
    """Why this call's outcome rules out a shadow: not a success answered by the provider."""
    if row.get("cache") in ("hit", "replay"):
        return "answered from the cache"
    if row.get("blocked_by"):
        return f"blocked ({row['blocked_by']})"
    status = row.get("status_code")
    if row.get("error") or not isinstance(status, int) or not 200 <= status < 300:
        return "failed upstream"
    return None
