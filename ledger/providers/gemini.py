"""Google's Gemini API (`generativelanguage.googleapis.com`): native and OpenAI-compatible.

Native calls name the model in the path (`/v1beta/models/gemini-2.5-flash:generateContent`), so the
model is read from — and, routed, rewritten in — the path, not the body. `streamGenerateContent`
streams SSE with `alt=sse` and one JSON array otherwise (its endpoint kind `stream_json`); both are
teed unbuffered. Usage is `usageMetadata`, which every stream chunk repeats with running totals (the
last one counts): `promptTokenCount` already includes `cachedContentTokenCount`, thinking
(`thoughtsTokenCount`) is billed as output and `toolUsePromptTokenCount` as input. The key comes in
`x-goog-api-key` or the `?key=` query parameter (redacted everywhere turnout stores or shows a path).
`/v1beta/openai/…` speaks OpenAI's chat and embeddings formats and is read as OpenAI's.
`countTokens` and the model list are forwarded unparsed: they cost nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from .. import messages
from ..pricing import Usage
from ..sse import SSEEvent, encode_event, event_json
from . import openai as _openai
from .base import int_at, str_at

name = "gemini"
hosts = ("generativelanguage.googleapis.com",)

_NATIVE = re.compile(
    r"^/(?P<version>v1(?:alpha|beta)?\d*)/(?P<resource>(?:models|tunedModels)/[^/:]+):(?P<method>\w+)$"
)
_METHODS = {
    "generateContent": "generate",
    "streamGenerateContent": "stream",
    "embedContent": "embed",
    "batchEmbedContents": "batch_embed",
}
_COMPAT = {"/v1beta/openai/chat/completions": "chat", "/v1beta/openai/embeddings": "embeddings"}
COMPAT_ENDPOINTS = frozenset(_COMPAT.values())
STREAMS = frozenset({"stream", "stream_json"})
_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip


def endpoint(path: str) -> str | None:
    head, _, query = path.partition("?")
    head = head.rstrip("/")
    if head in _COMPAT:
        return _COMPAT[head]
    m = _NATIVE.match(head)
    kind = _METHODS.get(m.group("method")) if m else None
    if kind == "stream" and dict(parse_qsl(query)).get("alt") != "sse":
        return "stream_json"
    return kind


def _path_model(path: str) -> str | None:
    m = _NATIVE.match(path.partition("?")[0].rstrip("/"))
    if m is None:
        return None
    resource = m.group("resource")
    return resource.removeprefix("models/")


def api_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    if headers.get("x-goog-api-key"):
        return headers["x-goog-api-key"]
    if query.get("key"):
        return query["key"]
    auth = headers.get("authorization", "")  # the OpenAI-compatible endpoint: the API key as a bearer token
    return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None


def request_model(endpoint: str, body: Any, path: str = "") -> str | None:
    if endpoint in COMPAT_ENDPOINTS:
        model = str_at(body, "model")
        return model.removeprefix("models/") if model else None
    return _path_model(path)


def with_model(endpoint: str, body: dict[str, Any], path: str, model: str) -> str:
    """Send the request to `model`: the path names it on native calls, the body on compatible ones."""
    if endpoint in COMPAT_ENDPOINTS:
        body["model"] = model
        return path
    head, sep, query = path.partition("?")
    m = _NATIVE.match(head.rstrip("/"))
    if m is None or not m.group("resource").startswith("models/"):
        return path
    return f"/{m.group('version')}/models/{model}:{m.group('method')}{sep}{query}"


def wants_stream(endpoint: str, body: Any) -> bool:
    if endpoint in COMPAT_ENDPOINTS:
        return _openai.wants_stream(endpoint, body)
    return endpoint in STREAMS


def stream_framing(endpoint: str) -> str:
    return "json-array" if endpoint == "stream_json" else "sse"


def ensure_stream_usage(endpoint: str, body: dict[str, Any]) -> bool:
    return False  # every Gemini stream chunk carries usage, the compatible endpoint's too


def asked_for_stream_usage(body: Any) -> bool:
    return True


def is_usage_only_chunk(chunk: Any) -> bool:
    return False


def usage_from(endpoint: str, usage: Any) -> Usage | None:
    if endpoint in COMPAT_ENDPOINTS:
        return _openai.usage_from(endpoint, usage)
    if not isinstance(usage, dict):
        return None
    thoughts = int_at(usage, "thoughtsTokenCount")
    return Usage(
        prompt_tokens=int_at(usage, "promptTokenCount") + int_at(usage, "toolUsePromptTokenCount"),
        cached_prompt_tokens=int_at(usage, "cachedContentTokenCount"),
        completion_tokens=int_at(usage, "candidatesTokenCount") + thoughts,
        reasoning_tokens=thoughts,
    )


def response_usage(endpoint: str, body: Any) -> Usage | None:
    if endpoint in COMPAT_ENDPOINTS:
        return _openai.response_usage(endpoint, body)
    body = _whole(body)
    return usage_from(endpoint, body.get("usageMetadata")) if isinstance(body, dict) else None


def response_model(body: Any) -> str | None:
    body = _whole(body)
    return str_at(body, "modelVersion") or str_at(body, "model")


def finish_reason(endpoint: str, body: Any) -> str | None:
    if endpoint in COMPAT_ENDPOINTS:
        return _openai.finish_reason(endpoint, body)
    body = _whole(body)
    candidates = body.get("candidates") if isinstance(body, dict) else None
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return str_at(candidates[0], "finishReason")
    return None


def error_body(*, status: int, message: str, type: str, code: str | None = None) -> dict[str, Any]:
    # Google's error shape; `type` too, so an OpenAI SDK on the compatible endpoint reads it as well
    return {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN"), "type": type}}


def _whole(body: Any) -> Any:
    """A JSON-array stream read whole (a buffered `stream_json` answer) as the one answer it assembles to."""
    if not isinstance(body, list):
        return body
    asm = GenerateStream()
    for item in body:
        if isinstance(item, dict):
            asm.feed(SSEEvent(None, json.dumps(item)))
    return asm.result()


class GenerateStream:
    """Rebuilds a `GenerateContentResponse` from stream chunks (either framing): text parts merged,
    function calls kept whole, the last `usageMetadata` (running totals) and the finish reason."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._parts: list[dict[str, Any]] = []
        self._role = "model"
        self._finish: str | None = None
        self._extra: dict[str, Any] = {}
        self._usage: dict[str, Any] | None = None
        self._error: str | None = None
        self.done = False

    def feed(self, event: SSEEvent) -> None:
        chunk = event_json(event)
        if chunk is None:
            return
        if isinstance(chunk.get("error"), dict):
            self._error = json.dumps(chunk["error"])[:500]
            return
        for key in ("responseId", "modelVersion", "promptFeedback", "createTime"):
            if key in chunk:
                self._head[key] = chunk[key]
        if isinstance(chunk.get("usageMetadata"), dict):
            self._usage = chunk["usageMetadata"]
        candidates = chunk.get("candidates")
        first = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(first, dict):
            return
        content = first.get("content")
        if isinstance(content, dict):
            self._role = content.get("role") or self._role
            for part in content.get("parts") or ():
                if not isinstance(part, dict):
                    continue
                last = self._parts[-1] if self._parts else None
                if (
                    isinstance(part.get("text"), str)
                    and last is not None
                    and isinstance(last.get("text"), str)
                    and bool(last.get("thought")) == bool(part.get("thought"))
                    and set(part) <= {"text", "thought"}
                ):
                    last["text"] += part["text"]
                else:
                    self._parts.append(dict(part))
        for key in ("safetyRatings", "citationMetadata", "groundingMetadata"):
            if key in first:
                self._extra[key] = first[key]
        if isinstance(first.get("finishReason"), str):
            self._finish = first["finishReason"]
            self.done = True

    def result(self) -> dict[str, Any] | None:
        if not self._parts and self._finish is None and not self._head:
            return None
        candidate = {"content": {"role": self._role, "parts": self._parts}, "finishReason": self._finish, "index": 0}
        out: dict[str, Any] = {"candidates": [{**candidate, **self._extra}]}
        if self._usage is not None:
            out["usageMetadata"] = self._usage
        return {**out, **self._head}

    @property
    def usage(self) -> Usage | None:
        return usage_from("generate", self._usage) if self._usage else None

    @property
    def usage_final(self) -> bool:
        return self._usage is not None and self.done

    @property
    def error(self) -> str | None:
        return self._error


def stream_assembler(endpoint: str):
    return _openai.stream_assembler(endpoint) if endpoint in COMPAT_ENDPOINTS else GenerateStream()


def replay_stream(endpoint: str, recorded: dict[str, Any], *, include_usage: bool = True) -> bytes:
    """A recorded answer as the stream the API would have sent: text in a few chunks, calls whole, usage and
    the finish reason on the last; SSE (`alt=sse`) or one JSON array."""
    if endpoint in COMPAT_ENDPOINTS:
        return _openai.replay_stream(endpoint, recorded, include_usage=include_usage)
    candidates = recorded.get("candidates") or [{}]
    first = candidates[0] if isinstance(candidates[0], dict) else {}
    content = first.get("content") if isinstance(first.get("content"), dict) else {}
    head = {k: recorded[k] for k in ("responseId", "modelVersion") if k in recorded}
    chunks: list[dict[str, Any]] = []
    for part in content.get("parts") or ():
        if isinstance(part, dict) and isinstance(part.get("text"), str) and set(part) <= {"text", "thought"}:
            text = part["text"]
            step = max(1, -(-len(text) // 4))
            pieces = [text[i : i + step] for i in range(0, len(text), step)] or [""]
            chunks += [{"parts": [{**part, "text": piece}]} for piece in pieces]
        elif isinstance(part, dict):
            chunks.append({"parts": [part]})
    chunks = chunks or [{"parts": []}]
    out = []
    for i, c in enumerate(chunks):
        candidate: dict[str, Any] = {"content": {"role": content.get("role") or "model", **c}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate], **head}
        if i == len(chunks) - 1:
            candidate["finishReason"] = first.get("finishReason") or "STOP"
        if "usageMetadata" in recorded:
            chunk["usageMetadata"] = recorded["usageMetadata"]
        out.append(json.dumps(chunk, separators=(",", ":"), ensure_ascii=False))
    if endpoint == "stream_json":
        return ("[" + ",\r\n".join(out) + "]").encode()
    return b"".join(encode_event(data) for data in out)


def request_parts(endpoint: str, body: Any) -> list[messages.Part]:
    return messages.request_parts(body)


def answer_parts(endpoint: str, body: Any) -> list[messages.Part]:
    return messages.answer_parts(_whole(body))
