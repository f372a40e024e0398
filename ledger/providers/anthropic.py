"""Anthropic's Messages API (`POST /v1/messages`), streamed or not.

Usage differs from OpenAI's: `input_tokens` excludes prompt-cache reads and writes, which are
reported (and billed) separately, so the ledger's `prompt_tokens` is their sum. Streams always
carry usage (`message_start` and `message_delta`), so nothing is injected upstream.
`messages` calls are recorded, priced, cached, budgeted and routed (the router's Anthropic
ladders) like OpenAI's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import messages
from ..pricing import Usage
from ..sse import SSEEvent, encode_event, event_json
from .base import int_at, str_at

name = "anthropic"
hosts = ("api.anthropic.com",)

_ENDPOINTS = {"/v1/messages": "messages"}


def endpoint(path: str) -> str | None:
    return _ENDPOINTS.get(path.split("?", 1)[0].rstrip("/"))


def api_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None


def request_model(endpoint: str, body: Any, path: str = "") -> str | None:
    return str_at(body, "model")


def with_model(endpoint: str, body: dict[str, Any], path: str, model: str) -> str:
    body["model"] = model
    return path


def stream_framing(endpoint: str) -> str:
    return "sse"


def wants_stream(endpoint: str, body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


def ensure_stream_usage(endpoint: str, body: dict[str, Any]) -> bool:
    return False  # Anthropic streams always report usage


def asked_for_stream_usage(body: Any) -> bool:
    return True


def is_usage_only_chunk(chunk: Any) -> bool:
    return False  # usage rides on message_start / message_delta, never an event of its own


def usage_from(endpoint: str, usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    read, write = int_at(usage, "cache_read_input_tokens"), int_at(usage, "cache_creation_input_tokens")
    return Usage(
        prompt_tokens=int_at(usage, "input_tokens") + read + write,
        cached_prompt_tokens=read,
        completion_tokens=int_at(usage, "output_tokens"),
        cache_write_tokens=write,
    )


def response_usage(endpoint: str, body: Any) -> Usage | None:
    return usage_from(endpoint, body.get("usage")) if isinstance(body, dict) else None


def response_model(body: Any) -> str | None:
    return str_at(body, "model")


def finish_reason(endpoint: str, body: Any) -> str | None:
    return str_at(body, "stop_reason")


def error_body(*, status: int, message: str, type: str, code: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message, "code": code}}


class MessagesStream:
    """Rebuilds a `message` from `message_start`, content block deltas and `message_delta`."""

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, str] = {}
        self._usage: dict[str, Any] = {}
        self._usage_final = False
        self._error: str | None = None
        self.done = False

    def feed(self, event: SSEEvent) -> None:
        data = event_json(event)
        if data is None:
            return
        kind = data.get("type") or event.event
        if kind == "message_start" and isinstance(data.get("message"), dict):
            self._message = dict(data["message"])
            self._usage.update(self._message.get("usage") or {})
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            self._blocks[data.get("index", 0)] = dict(data["content_block"])
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            idx, delta = data.get("index", 0), data["delta"]
            block = self._blocks.setdefault(idx, {"type": "text", "text": ""})
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + str(delta.get("text", ""))
            elif delta.get("type") == "input_json_delta":
                self._json[idx] = self._json.get(idx, "") + str(delta.get("partial_json", ""))
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "message_delta":
            if self._message is not None and isinstance(data.get("delta"), dict):
                self._message.update({k: v for k, v in data["delta"].items() if k in ("stop_reason", "stop_sequence")})
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            self._usage_final = self._usage_final or bool(data.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self._error = json.dumps(data.get("error"))[:500]

    def result(self) -> dict[str, Any] | None:
        if self._message is None:
            return None
        content = []
        for idx in sorted(self._blocks):
            block = dict(self._blocks[idx])
            if block.get("type") == "tool_use" and idx in self._json:
                try:
                    block["input"] = json.loads(self._json[idx]) if self._json[idx] else {}
                except ValueError:
                    block["input"] = self._json[idx]
            content.append(block)
        return {**self._message, "content": content, "usage": dict(self._usage)}

    @property
    def usage(self) -> Usage | None:
        return usage_from("messages", self._usage) if self._usage else None

    @property
    def usage_final(self) -> bool:
        return self._usage_final  # message_start's usage has the prompt; the output count comes in message_delta

    @property
    def error(self) -> str | None:
        return self._error


def stream_assembler(endpoint: str) -> MessagesStream:
    return MessagesStream()


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return encode_event(json.dumps({"type": event, **data}, separators=(",", ":"), ensure_ascii=False), event)


def replay_stream(endpoint: str, recorded: dict[str, Any], *, include_usage: bool = True) -> bytes:
    """The event stream a live call would have sent for a recorded message (cache hits, replay)."""
    usage = dict(recorded.get("usage") or {})
    start = {
        **recorded,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    out = [_sse("message_start", {"message": start})]
    for idx, block in enumerate(recorded.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            out.append(_sse("content_block_start", {"index": idx, "content_block": {"type": "text", "text": ""}}))
            text = block.get("text") or ""
            step = max(1, -(-len(text) // 8))
            for i in range(0, len(text), step):
                out.append(
                    _sse(
                        "content_block_delta",
                        {"index": idx, "delta": {"type": "text_delta", "text": text[i : i + step]}},
                    )
                )
        elif kind == "tool_use":
            out.append(_sse("content_block_start", {"index": idx, "content_block": {**block, "input": {}}}))
            out.append(
                _sse(
                    "content_block_delta",
                    {
                        "index": idx,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block.get("input", {}))},
                    },
                )
            )
        else:
            out.append(_sse("content_block_start", {"index": idx, "content_block": block}))
        out.append(_sse("content_block_stop", {"index": idx}))
    delta = {"stop_reason": recorded.get("stop_reason"), "stop_sequence": recorded.get("stop_sequence")}
    out.append(_sse("message_delta", {"delta": delta, "usage": {"output_tokens": usage.get("output_tokens", 0)}}))
    out.append(_sse("message_stop", {}))
    return b"".join(out)


def request_parts(endpoint: str, body: Any) -> list[messages.Part]:
    return messages.request_parts(body)


def answer_parts(endpoint: str, body: Any) -> list[messages.Part]:
    return messages.answer_parts(body)
