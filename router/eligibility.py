"""What turnout may send again on its own (a shadow call): never anything with side effects or state.

A shadow repeats the client's request to another model. That is harmless only for a pure
question-and-answer call; these are never repeated:
stored or chained Responses (`store: true`, `previous_response_id`, conversations, item
references), background mode, server-side tools (web search, code interpreter, file search, MCP,
computer use, …), signed thinking / reasoning items carried from earlier turns (tied to the model
that made them), audio and realtime, batch / files / fine-tuning / embeddings endpoints, and any
call that was not answered by the provider with a success (cache hits, blocked calls, failures).
Nothing is sent for them and nothing is recorded. A Responses call is repeated with `store: false`.
"""

from __future__ import annotations

from typing import Any

from turnout.ledger.messages import request_parts

SHADOWABLE = frozenset({"chat", "responses", "completions", "messages"})
# Tools the provider runs itself (a repeat would search, execute or act again): by type prefix.
SERVER_TOOLS = ("web_search", "file_search", "code_interpreter", "code_execution", "computer", "mcp", "image_generation",
                "local_shell", "web_fetch", "bash", "text_editor", "memory")  # fmt: skip
_STATEFUL_KEYS = {
    "previous_response_id": "chained to a stored response (previous_response_id)",
    "conversation": "part of a stored conversation",
    "background": "background mode",
    "mcp_servers": "server-side tools (MCP)",
    "web_search_options": "server-side tool (web search)",
    "container": "reuses a code-execution container",
    "audio": "audio",
}


def request_block(endpoint: str | None, body: Any) -> str | None:
    """Why this request must never be shadowed (a short reason), or None."""
    if endpoint not in SHADOWABLE:
        return f"endpoint {endpoint or 'unparsed'} is not shadowed"
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if body.get("store") is True:
        return "store: true (the provider keeps state)"
    for key, reason in _STATEFUL_KEYS.items():
        if body.get(key):
            return reason
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        return "audio"
    tools = body.get("tools")
    if isinstance(tools, list):
        for t in tools:
            kind = t.get("type") if isinstance(t, dict) else None
            if isinstance(kind, str) and kind.startswith(SERVER_TOOLS):
                return f"server-side tool ({kind})"
    for part in request_parts(body):
        if part.kind == "thinking" and part.role == "assistant":
            return "carries signed thinking / reasoning from earlier turns"
        if part.kind == "audio":
            return "audio"
        if part.kind == "reference":
            return "refers to stored items"
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
