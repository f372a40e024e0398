"""Streams between OpenAI chat, Anthropic Messages and Gemini, event by event, for failover.

A target's events become OpenAI chat chunks (the hub, as in ledger/translate.py), and those become
the client's events as they come: nothing waits for the stream's end except Gemini's function calls,
which Gemini sends whole (so their argument deltas are gathered until the call's last one). The
translators keep only what the next event needs (open block, tool-call indexes, usage).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .sse import SSEEvent, encode_event, event_json
from .translate import (
    ANTHROPIC_STOP_FROM_OPENAI,
    GEMINI_FINISH_FROM_OPENAI,
    OPENAI_FINISH_FROM_ANTHROPIC,
    OPENAI_FINISH_FROM_GEMINI,
    gemini_usage_from_hub,
    gemini_usage_to_hub,
)


def is_content(chunk: dict[str, Any]) -> bool:
    """Whether a hub chunk carries content (text, a tool call, a finish), not just the stream's opening."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or choice.get("finish_reason"):
            return True
    return False


class TargetToHub:
    """A target's stream events (parsed) to hub chunks. `done`: the target's own end arrived."""

    def __init__(self, fmt: str, model: str) -> None:
        self.fmt = fmt
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.done = False
        self.error: str | None = None  # the stream said it failed (an error event)
        self.unsupported: str | None = None  # it sent something the hub cannot carry (a server tool's block)
        self.saw_content = False  # anything past the opening: text, a tool call, thinking, a block of any kind
        self.usage: dict[str, Any] | None = None
        self._tool_of_block: dict[int, int] = {}
        self._tools = 0
        self._finish: str | None = None
        self._anthropic_usage: dict[str, Any] = {}
        self._opened = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip

    def usage_chunk(self) -> dict[str, Any] | None:
        if self.usage is None:
            return None
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": self.usage}  # fmt: skip

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        if self.fmt == "openai":
            if event.data == "[DONE]":
                self.done = True
                return []
            chunk = event_json(event)
            if chunk is None:
                return []
            if "error" in chunk:
                self.error = json.dumps(chunk["error"])[:300]
                return []
            if isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
            if is_content(chunk) or any(
                (c.get("delta") or {}).get(k)
                for c in chunk.get("choices") or ()
                for k in ("reasoning_content", "reasoning")
            ):
                self.saw_content = True
            return [chunk] if chunk.get("choices") else []
        data = event_json(event)
        if data is None:
            return []
        return self._anthropic(data) if self.fmt == "anthropic" else self._gemini(data)

    def _anthropic(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type")
        if kind == "message_start":
            msg = data.get("message") or {}
            self.model = msg.get("model") or self.model
            self._anthropic_usage.update(msg.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("content_block_start", "content_block_delta"):
            self.saw_content = True
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                k = self._tool_of_block[data.get("index", 0)] = self._tools
                self._tools += 1
                call = {"index": k, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}  # fmt: skip
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") not in ("text", "thinking", "redacted_thinking"):
                self.unsupported = f"an Anthropic {block.get('type')} block has no OpenAI form"
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                k = self._tool_of_block.get(data.get("index", 0), 0)
                return [
                    self._chunk(
                        {"tool_calls": [{"index": k, "function": {"arguments": delta.get("partial_json", "")}}]}
                    )
                ]
            return []  # thinking and its signature stay with Anthropic
        if kind == "message_delta":
            self._anthropic_usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            reason = (data.get("delta") or {}).get("stop_reason")
            self._set_usage_from_anthropic()
            return [self._chunk({}, OPENAI_FINISH_FROM_ANTHROPIC.get(reason or "", "stop"))]
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = json.dumps(data.get("error"))[:300]
        return []

    def _set_usage_from_anthropic(self) -> None:
        u = self._anthropic_usage
        read, write = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
        prompt = (u.get("input_tokens") or 0) + read + write
        out = u.get("output_tokens") or 0
        self.usage = {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
                      "prompt_tokens_details": {"cached_tokens": read}}  # fmt: skip

    def _gemini(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(data.get("error"), dict):
            self.error = json.dumps(data["error"])[:300]
            return []
        self.model = data.get("modelVersion") or self.model
        if isinstance(data.get("usageMetadata"), dict):
            self.usage = gemini_usage_to_hub(data["usageMetadata"])
        out: list[dict[str, Any]] = []
        if not self._opened:
            self._opened = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        candidates = data.get("candidates")
        cand = candidates[0] if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) else {}
        blocked = (
            (data.get("promptFeedback") or {}).get("blockReason")
            if isinstance(data.get("promptFeedback"), dict)
            else None
        )
        if blocked and not cand:
            self.saw_content = self.done = True
            return [*out, self._chunk({}, "content_filter")]
        content = cand.get("content") if isinstance(cand.get("content"), dict) else {}
        for part in content.get("parts") or ():
            if not isinstance(part, dict):
                continue
            self.saw_content = True
            if isinstance(part.get("text"), str) and not part.get("thought"):
                if part["text"]:
                    out.append(self._chunk({"content": part["text"]}))
            elif isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                k = self._tools
                self._tools += 1
                out.append(self._chunk({"tool_calls": [{
                    "index": k, "id": call.get("id") or f"call_{uuid.uuid4().hex[:20]}", "type": "function",
                    "function": {"name": call.get("name"), "arguments": json.dumps(call.get("args") or {})}}]}))  # fmt: skip
        reason = cand.get("finishReason")
        if reason:
            finish = "tool_calls" if self._tools else OPENAI_FINISH_FROM_GEMINI.get(reason, "stop")
            out.append(self._chunk({}, finish))
            self.done = True
        return out


class HubToClient:
    """Hub chunks to the bytes of the client's own stream format, as they come; `end()` closes the stream
    as its provider would, `fail()` ends it with that provider's error event (never a clean end)."""

    def __init__(self, fmt: str, *, include_usage: bool = True, json_array: bool = False) -> None:
        self.fmt = fmt
        self.include_usage = include_usage
        self.json_array = json_array
        self._started = False
        self._block: tuple[int, str] | None = None  # Anthropic: (index, type) of the open content block
        self._next_block = 0
        self._tool_block: dict[int, int] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._model = ""
        self._id = ""
        self._calls: dict[int, dict[str, Any]] = {}  # Gemini: function calls gathered until whole
        self._elements = 0

    def feed(self, chunk: dict[str, Any]) -> bytes:
        self._model = chunk.get("model") or self._model
        self._id = chunk.get("id") or self._id
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        if self.fmt == "openai":
            if not chunk.get("choices"):
                return b""  # the usage chunk goes out at the end, once
            return encode_event(json.dumps(chunk, separators=(",", ":"), ensure_ascii=False))
        if self.fmt == "anthropic":
            return b"".join(self._anthropic(chunk))
        return self._gemini(chunk)

    def end(self) -> bytes:
        if self.fmt == "openai":
            usage = b""
            if self.include_usage and self._usage is not None:
                last = {"id": self._id, "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": self._model, "choices": [], "usage": self._usage}  # fmt: skip
                usage = encode_event(json.dumps(last, separators=(",", ":")))
            return usage + encode_event("[DONE]")
        if self.fmt == "anthropic":
            out = self._start()
            out += self._close_block()
            u = self._usage or {}
            cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            usage = {"output_tokens": u.get("completion_tokens") or 0,
                     "input_tokens": (u.get("prompt_tokens") or 0) - cached, "cache_read_input_tokens": cached}  # fmt: skip
            stop = ANTHROPIC_STOP_FROM_OPENAI.get(self._finish or "stop", "end_turn")
            out.append(
                _anthropic_event(
                    "message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage}
                )
            )
            out.append(_anthropic_event("message_stop", {}))
            return b"".join(out)
        parts = [{"functionCall": self._calls[k]["call"]} for k in sorted(self._calls)]
        for k in sorted(self._calls):
            call = self._calls[k]["call"]
            try:
                call["args"] = json.loads(self._calls[k]["args"] or "{}")
            except ValueError:
                call["args"] = {}
        element: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0,
                                   "finishReason": GEMINI_FINISH_FROM_OPENAI.get(self._finish or "stop", "STOP")}],
                                   "modelVersion": self._model}  # fmt: skip
        if self._usage is not None:
            element["usageMetadata"] = gemini_usage_from_hub(self._usage)
        return self._gemini_element(element) + (b"]" if self.json_array else b"")

    def fail(self, message: str) -> bytes:
        err = {"message": message, "type": "upstream_error"}
        if self.fmt == "openai":
            return encode_event(json.dumps({"error": err}))
        if self.fmt == "anthropic":
            return b"".join(self._start()) + _anthropic_event(
                "error", {"error": {"type": "api_error", "message": message}}
            )
        body = {"error": {"code": 502, "message": message, "status": "UNAVAILABLE"}}
        return self._gemini_element(body)  # a JSON array left open: not a clean end either

    # -- Anthropic

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        msg = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": self._model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 0, "output_tokens": 0}}  # fmt: skip
        return [_anthropic_event("message_start", {"message": msg})]

    def _close_block(self) -> list[bytes]:
        if self._block is None:
            return []
        index, _ = self._block
        self._block = None
        return [_anthropic_event("content_block_stop", {"index": index})]

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        index = self._next_block
        self._next_block += 1
        self._block = (index, kind)
        return [*out, _anthropic_event("content_block_start", {"index": index, "content_block": block})]

    def _anthropic(self, chunk: dict[str, Any]) -> list[bytes]:
        out = self._start()
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._block is None or self._block[1] != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(_anthropic_event("content_block_delta", {"index": self._block[0],
                                            "delta": {"type": "text_delta", "text": delta["content"]}}))  # fmt: skip
            for tc in delta.get("tool_calls") or ():
                k = tc.get("index", 0)
                fn = tc.get("function") or {}
                if k not in self._tool_block:
                    out += self._open("tool_use", {"type": "tool_use", "id": tc.get("id") or f"toolu_{uuid.uuid4().hex[:20]}",
                                                   "name": fn.get("name") or "", "input": {}})  # fmt: skip
                    assert self._block is not None
                    self._tool_block[k] = self._block[0]
                if fn.get("arguments"):
                    out.append(_anthropic_event("content_block_delta", {"index": self._tool_block[k],
                               "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]}}))  # fmt: skip
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    # -- Gemini

    def _gemini_element(self, element: dict[str, Any]) -> bytes:
        data = json.dumps(element, separators=(",", ":"), ensure_ascii=False)
        if not self.json_array:
            return encode_event(data)
        self._elements += 1
        return (("[" if self._elements == 1 else ",\r\n") + data).encode()

    def _gemini(self, chunk: dict[str, Any]) -> bytes:
        parts: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                parts.append({"text": delta["content"]})
            for tc in delta.get("tool_calls") or ():
                k = tc.get("index", 0)
                fn = tc.get("function") or {}
                slot = self._calls.setdefault(k, {"call": {"name": ""}, "args": ""})
                if fn.get("name"):
                    slot["call"]["name"] = fn["name"]
                slot["args"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        if not parts:
            return b""
        element = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": self._model,
        }
        return self._gemini_element(element)


def _anthropic_event(kind: str, data: dict[str, Any]) -> bytes:
    return encode_event(json.dumps({"type": kind, **data}, separators=(",", ":"), ensure_ascii=False), kind)
