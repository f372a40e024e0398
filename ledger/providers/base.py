"""The small interface every provider module implements.

Everything provider-specific — hosts, paths, where the key and the model are, how usage is
reported, how a stream assembles, what an error looks like — lives behind this, so adding
a provider is a new module, not edits across the proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..messages import Part
from ..pricing import Usage
from ..sse import SSEEvent


def int_at(d: Any, *path: str) -> int:
    """The int at a key path in parsed JSON; 0 when a key is missing or the value is not an int."""
    for key in path:
        if not isinstance(d, dict):
            return 0
        d = d.get(key)
    return d if isinstance(d, int) and not isinstance(d, bool) else 0


def str_at(body: Any, key: str) -> str | None:
    """`body[key]` when body is a JSON object and the value a string; else None."""
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


class StreamAssembler(Protocol):
    """Accumulates a streamed answer into the object a non-streamed call would have returned."""

    def feed(self, event: SSEEvent) -> None: ...

    def result(self) -> dict[str, Any] | None: ...

    @property
    def usage(self) -> Usage | None: ...

    @property
    def usage_final(self) -> bool:
        """Whether `usage` is the provider's final count (a cut stream may carry none, or a partial one)."""
        ...

    @property
    def error(self) -> str | None: ...

    @property
    def done(self) -> bool:
        """Whether the stream reached its provider's end event (else it was cut)."""
        ...


class Provider(Protocol):
    name: str
    hosts: tuple[str, ...]

    def endpoint(self, path: str) -> str | None:
        """The parsed endpoint kind for a request path, or None for paths forwarded unparsed."""

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None: ...

    def request_model(self, endpoint: str, body: Any, path: str = "") -> str | None:
        """The model asked for: in the body, or (Gemini) in the path."""

    def with_model(self, endpoint: str, body: dict[str, Any], path: str, model: str) -> str:
        """Point the request at `model` (the body changed in place); returns the path to send it to."""

    def stream_framing(self, endpoint: str) -> str:
        """How its streams are framed: "sse", or "json-array" (Gemini without `alt=sse`)."""

    def wants_stream(self, endpoint: str, body: Any) -> bool: ...

    def ensure_stream_usage(self, endpoint: str, body: dict[str, Any]) -> bool:
        """Ask for usage in the stream if the client did not; True when the body was changed."""

    def response_usage(self, endpoint: str, body: Any) -> Usage | None: ...

    def response_model(self, body: Any) -> str | None: ...

    def finish_reason(self, endpoint: str, body: Any) -> str | None: ...

    def stream_assembler(self, endpoint: str) -> StreamAssembler: ...

    def error_body(self, *, status: int, message: str, type: str, code: str | None = None) -> dict[str, Any]: ...

    def asked_for_stream_usage(self, body: Any) -> bool:
        """Whether the client's own request asked for usage in its stream (a replayed stream matches it)."""

    def request_parts(self, endpoint: str, body: Any) -> list[Part]:
        """What the request sends, message by message (ledger/messages.py): role, kind, text."""

    def answer_parts(self, endpoint: str, body: Any) -> list[Part]:
        """What the answer says: text, refusals, tool calls, thinking."""

    def is_usage_only_chunk(self, chunk: Any) -> bool:
        """A stream event that carries only the usage turnout asked for (cut from what the client sees)."""

    def replay_stream(self, endpoint: str, recorded: dict[str, Any], *, include_usage: bool) -> bytes:
        """A recorded (non-streamed) answer as the SSE stream the provider would have sent."""
