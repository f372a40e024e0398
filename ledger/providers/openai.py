"""OpenAI's API (and the many servers that speak it): chat completions, responses, embeddings, completions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import messages
from ..pricing import Usage
from ..sse import SSEEvent, encode_event, event_json
from .base import int_at, str_at

name = "openai"
hosts = ("api.openai.com",)

_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/completions": "completions",
}
STREAMING_ENDPOINTS = frozenset({"chat", "responses", "completions"})


def endpoint(path: str) -> str | None:
    return _ENDPOINTS.get(path.split("?", 1)[0].rstrip("/"))


def api_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("api-key") or None  # Azure OpenAI style


def request_model(endpoint: str, body: Any, path: str = "") -> str | None:
    return str_at(body, "model")


def with_model(endpoint: str, body: dict[str, Any], path: str, model: str) -> str:
    body["model"] = model
    return path


def stream_framing(endpoint: str) -> str:
    return "sse"


def wants_stream(endpoint: str, body: Any) -> bool:
    return endpoint in STREAMING_ENDPOINTS and isinstance(body, dict) and body.get("stream") is True


def ensure_stream_usage(endpoint: str, body: dict[str, Any]) -> bool:
    if endpoint not in ("chat", "completions") or not wants_stream(endpoint, body):
        return False
    opts = body.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage") is True:
        return False
    body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    return True


def usage_from(endpoint: str, usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    if endpoint == "responses":
        return Usage(
            prompt_tokens=int_at(usage, "input_tokens"),
            cached_prompt_tokens=int_at(usage, "input_tokens_details", "cached_tokens"),
            completion_tokens=int_at(usage, "output_tokens"),
            reasoning_tokens=int_at(usage, "output_tokens_details", "reasoning_tokens"),
        )
    return Usage(
        prompt_tokens=int_at(usage, "prompt_tokens"),
        cached_prompt_tokens=int_at(usage, "prompt_tokens_details", "cached_tokens"),
        completion_tokens=int_at(usage, "completion_tokens"),
        reasoning_tokens=int_at(usage, "completion_tokens_details", "reasoning_tokens"),
    )


def response_usage(endpoint: str, body: Any) -> Usage | None:
    return usage_from(endpoint, body.get("usage")) if isinstance(body, dict) else None


def response_model(body: Any) -> str | None:
    return str_at(body, "model")


def finish_reason(endpoint: str, body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    if endpoint == "responses":
        status = body.get("status")
        return status if isinstance(status, str) else None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        fr = choices[0].get("finish_reason")
        return fr if isinstance(fr, str) else None
    return None


def error_body(*, status: int, message: str, type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def is_usage_only_chunk(chunk: Any) -> bool:
    """The extra final chunk `include_usage` adds: no choices, only usage."""
    return isinstance(chunk, dict) and chunk.get("choices") == [] and isinstance(chunk.get("usage"), dict)


class ChatStream:
    """Rebuilds a `chat.completion` from `chat.completion.chunk` events (content, refusal, tool calls)."""

    def __init__(self, object_name: str = "chat.completion") -> None:
        self._object = object_name
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage_raw: dict[str, Any] | None = None
        self._error: str | None = None
        self.done = False

    def feed(self, event: SSEEvent) -> None:
        if event.data == "[DONE]":
            self.done = True
            return
        chunk = event_json(event)
        if chunk is None:
            return
        if "error" in chunk:
            self._error = json.dumps(chunk["error"])[:500]
            return
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if key in chunk and chunk[key] is not None:
                self._head.setdefault(key, chunk[key])
        if isinstance(chunk.get("usage"), dict):
            self._usage_raw = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._merge_choice(choice)

    def _merge_choice(self, choice: dict[str, Any]) -> None:
        idx = choice.get("index", 0)
        acc = self._choices.setdefault(
            idx,
            {
                "index": idx,
                "role": None,
                "content": None,
                "refusal": None,
                "reasoning_content": None,
                "tool_calls": {},
                "text": None,
            },
        )
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if delta.get("role"):
                acc["role"] = delta["role"]
            for key in ("content", "refusal", "reasoning_content"):  # reasoning_content: DeepSeek, vLLM
                if isinstance(delta.get(key), str):
                    acc[key] = (acc[key] or "") + delta[key]
            for tc in delta.get("tool_calls") or ():
                if not isinstance(tc, dict):
                    continue
                slot = acc["tool_calls"].setdefault(
                    tc.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                if tc.get("type"):
                    slot["type"] = tc["type"]
                fn = tc.get("function") or {}
                if isinstance(fn.get("name"), str):
                    slot["function"]["name"] += fn["name"]
                if isinstance(fn.get("arguments"), str):
                    slot["function"]["arguments"] += fn["arguments"]
        if isinstance(choice.get("text"), str):  # legacy completions stream
            acc["text"] = (acc["text"] or "") + choice["text"]
        if choice.get("finish_reason"):
            acc["finish_reason"] = choice["finish_reason"]

    def result(self) -> dict[str, Any] | None:
        if not self._head and not self._choices:
            return None
        choices = []
        for idx in sorted(self._choices):
            acc = self._choices[idx]
            if self._object == "text_completion":
                choices.append(
                    {
                        "index": idx,
                        "text": acc["text"] or "",
                        "finish_reason": acc.get("finish_reason"),
                        "logprobs": None,
                    }
                )
                continue
            message: dict[str, Any] = {"role": acc["role"] or "assistant", "content": acc["content"]}
            if acc["refusal"] is not None:
                message["refusal"] = acc["refusal"]
            if acc["reasoning_content"] is not None:
                message["reasoning_content"] = acc["reasoning_content"]
            if acc["tool_calls"]:
                message["tool_calls"] = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
            choices.append(
                {"index": idx, "message": message, "finish_reason": acc.get("finish_reason"), "logprobs": None}
            )
        out: dict[str, Any] = {"id": self._head.get("id"), "object": self._object, "created": self._head.get("created")}
        out["model"] = self._head.get("model")
        out["choices"] = choices
        if self._usage_raw is not None:
            out["usage"] = self._usage_raw
        for key in ("system_fingerprint", "service_tier"):
            if key in self._head:
                out[key] = self._head[key]
        return out

    @property
    def usage(self) -> Usage | None:
        return usage_from("chat", self._usage_raw)

    @property
    def usage_final(self) -> bool:
        return self.usage is not None  # the usage chunk is the stream's last

    @property
    def error(self) -> str | None:
        return self._error


class ResponsesStream:
    """The responses API streams typed events; `response.completed` carries the whole response."""

    def __init__(self) -> None:
        self._response: dict[str, Any] | None = None
        self._error: str | None = None
        self._items: dict[int, dict[str, Any]] = {}  # output_index -> item, for a stream cut before it completed
        self._deltas: dict[int, list[str]] = {}
        self.done = False

    def feed(self, event: SSEEvent) -> None:
        data = event_json(event)
        if data is None:
            return
        kind = data.get("type") or event.event
        if isinstance(data.get("response"), dict):
            self._response = data["response"]
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.done = True
        elif kind in ("response.output_item.added", "response.output_item.done") and isinstance(data.get("item"), dict):
            index = int_at(data, "output_index")
            self._items[index] = data["item"]
            if kind == "response.output_item.done":
                self._deltas.pop(index, None)
        elif isinstance(kind, str) and kind.endswith(".delta") and isinstance(data.get("delta"), str):
            self._deltas.setdefault(int_at(data, "output_index"), []).append(data["delta"])
        if kind == "error" or kind == "response.failed":
            self._error = json.dumps(data.get("error") or (self._response or {}).get("error"))[:500]

    def result(self) -> dict[str, Any] | None:
        if self.done or self._response is None or not (self._items or self._deltas):
            return self._response
        return {
            **self._response,
            "output": [self._partial_item(i) for i in sorted(self._items.keys() | self._deltas.keys())],
        }

    def _partial_item(self, index: int) -> dict[str, Any]:
        """An output item as far as it came: finished, or with the text its deltas carried so far."""
        item = dict(self._items.get(index) or {"type": "message"})
        if index in self._deltas:
            text = "".join(self._deltas[index])
            if item.get("type") == "function_call":
                item["arguments"] = str(item.get("arguments") or "") + text
            elif item.get("type") == "reasoning":
                item["summary"] = [{"type": "summary_text", "text": text}]
            else:
                item["content"] = [{"type": "output_text", "text": text}]
        return item

    @property
    def usage(self) -> Usage | None:
        return usage_from("responses", (self._response or {}).get("usage"))

    @property
    def usage_final(self) -> bool:
        return self.usage is not None

    @property
    def error(self) -> str | None:
        return self._error


def stream_assembler(endpoint: str) -> ChatStream | ResponsesStream:
    if endpoint == "responses":
        return ResponsesStream()
    return ChatStream("text_completion" if endpoint == "completions" else "chat.completion")


# -- rebuilding a stream from a recorded answer (cache hits, CI replay) ---------------------


def _split_text(text: str, pieces: int = 8) -> list[str]:
    if not text:
        return []
    step = max(1, -(-len(text) // pieces))
    return [text[i : i + step] for i in range(0, len(text), step)]


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return encode_event(payload, event)


def chat_chunks(
    recorded: dict[str, Any], *, include_usage: bool, object_name: str = "chat.completion.chunk"
) -> list[dict[str, Any]]:
    """The chunks a live stream of this answer would have carried: role, content/tool-call deltas, finish, usage."""
    base = {k: recorded.get(k) for k in ("id", "created", "model")}
    base["object"] = object_name
    if recorded.get("system_fingerprint"):
        base["system_fingerprint"] = recorded["system_fingerprint"]
    extra = {"usage": None} if include_usage else {}
    chunks: list[dict[str, Any]] = []

    def chunk(
        index: int, delta: dict[str, Any] | None = None, finish: str | None = None, text: str | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index}
        if object_name == "text_completion":
            choice["text"] = text or ""
        else:
            choice["delta"] = delta or {}
        choice["logprobs"] = None
        choice["finish_reason"] = finish
        return {**base, "choices": [choice], **extra}

    for choice in recorded.get("choices") or ():
        idx = choice.get("index", 0)
        if object_name == "text_completion":
            for piece in _split_text(choice.get("text") or ""):
                chunks.append(chunk(idx, text=piece))
            chunks.append(chunk(idx, finish=choice.get("finish_reason") or "stop"))
            continue
        msg = choice.get("message") or {}
        chunks.append(chunk(idx, {"role": msg.get("role", "assistant"), "content": "", "refusal": None}))
        for piece in _split_text(msg.get("content") or ""):
            chunks.append(chunk(idx, {"content": piece}))
        if msg.get("refusal"):
            chunks.append(chunk(idx, {"refusal": msg["refusal"]}))
        for n, call in enumerate(msg.get("tool_calls") or ()):
            fn = call.get("function") or {}
            chunks.append(
                chunk(
                    idx,
                    {
                        "tool_calls": [
                            {
                                "index": n,
                                "id": call.get("id"),
                                "type": call.get("type", "function"),
                                "function": {"name": fn.get("name", ""), "arguments": ""},
                            }
                        ]
                    },
                )
            )
            for piece in _split_text(fn.get("arguments") or "", 4):
                chunks.append(chunk(idx, {"tool_calls": [{"index": n, "function": {"arguments": piece}}]}))
        chunks.append(chunk(idx, {}, choice.get("finish_reason") or "stop"))
    if include_usage and recorded.get("usage") is not None:
        chunks.append({**base, "choices": [], "usage": recorded["usage"]})
    return chunks


def _response_events(recorded: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The responses API's typed events for a recorded response, enough for the SDK's stream accumulator."""
    in_progress = {**recorded, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": in_progress}),
        ("response.in_progress", {"response": in_progress}),
    ]
    for oi, item in enumerate(recorded.get("output") or ()):
        if item.get("type") == "message":
            events.append(
                (
                    "response.output_item.added",
                    {"output_index": oi, "item": {**item, "status": "in_progress", "content": []}},
                )
            )
            for ci, part in enumerate(item.get("content") or ()):
                text = part.get("text") or ""
                empty = {**part, "text": ""}
                events.append(
                    (
                        "response.content_part.added",
                        {"item_id": item.get("id"), "output_index": oi, "content_index": ci, "part": empty},
                    )
                )
                for piece in _split_text(text):
                    events.append(
                        (
                            "response.output_text.delta",
                            {
                                "item_id": item.get("id"),
                                "output_index": oi,
                                "content_index": ci,
                                "delta": piece,
                                "logprobs": [],
                            },
                        )
                    )
                events.append(
                    (
                        "response.output_text.done",
                        {
                            "item_id": item.get("id"),
                            "output_index": oi,
                            "content_index": ci,
                            "text": text,
                            "logprobs": [],
                        },
                    )
                )
                events.append(
                    (
                        "response.content_part.done",
                        {"item_id": item.get("id"), "output_index": oi, "content_index": ci, "part": part},
                    )
                )
        elif item.get("type") == "function_call":
            events.append(
                (
                    "response.output_item.added",
                    {"output_index": oi, "item": {**item, "arguments": "", "status": "in_progress"}},
                )
            )
            args = item.get("arguments") or ""
            for piece in _split_text(args, 4):
                events.append(
                    (
                        "response.function_call_arguments.delta",
                        {"item_id": item.get("id"), "output_index": oi, "delta": piece},
                    )
                )
            events.append(
                (
                    "response.function_call_arguments.done",
                    {"item_id": item.get("id"), "output_index": oi, "arguments": args},
                )
            )
        else:
            events.append(("response.output_item.added", {"output_index": oi, "item": item}))
        events.append(("response.output_item.done", {"output_index": oi, "item": item}))
    events.append(("response.completed", {"response": recorded}))
    return [(name, {"type": name, **data, "sequence_number": n}) for n, (name, data) in enumerate(events)]


def replay_stream(endpoint: str, recorded: dict[str, Any], *, include_usage: bool) -> bytes:
    """A valid SSE body for a recorded answer, parsed by the official SDKs exactly like a live one."""
    if endpoint == "responses":
        return b"".join(_sse(data, name) for name, data in _response_events(recorded))
    object_name = "text_completion" if endpoint == "completions" else "chat.completion.chunk"
    chunks = chat_chunks(recorded, include_usage=include_usage, object_name=object_name)
    return b"".join(_sse(c) for c in chunks) + _sse("[DONE]")


def asked_for_stream_usage(body: Any) -> bool:
    opts = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(opts, dict) and opts.get("include_usage") is True


def request_parts(endpoint: str, body: Any) -> list[messages.Part]:
    return messages.request_parts(body)


def answer_parts(endpoint: str, body: Any) -> list[messages.Part]:
    return messages.answer_parts(body)
