"""One walk over what a request sends and what an answer says, across every shape turnout parses.

OpenAI chat (`messages`), Responses (`instructions` + `input` items), completions (`prompt`),
embeddings (`input`), Anthropic Messages (`system` + content blocks) and Gemini (`systemInstruction` +
`contents` of `parts`, camelCase or snake_case as its REST API takes both) all become a flat list of
`Part`s: who said it, what kind of part it is, and its text. Token counts, attribution's template,
the router's features, mitmweb's views and the shadow comparators read these instead of each
walking the JSON their own way. Pure and bounded: a hostile body costs at most `MAX_DEPTH` levels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["text", "image", "audio", "file", "tool_call", "tool_result", "thinking", "reference", "other"]
MAX_DEPTH = 8

_KINDS: dict[str, Kind] = {
    "text": "text", "input_text": "text", "output_text": "text", "refusal": "text",
    "image_url": "image", "input_image": "image", "image": "image",
    "input_audio": "audio", "audio": "audio",
    "file": "file", "input_file": "file", "document": "file",
    "tool_use": "tool_call", "server_tool_use": "tool_call", "function_call": "tool_call", "custom_tool_call": "tool_call",
    "tool_result": "tool_result", "function_call_output": "tool_result", "custom_tool_call_output": "tool_result",
    "web_search_tool_result": "tool_result",
    "thinking": "thinking", "redacted_thinking": "thinking", "reasoning": "thinking",
    "item_reference": "reference",
}  # fmt: skip
_TEXT_KEYS = ("text", "content", "input_text", "output_text", "refusal", "output", "arguments", "thinking")


@dataclass(slots=True)
class Part:
    role: str  # who sent it: system | developer | user | assistant | tool (Anthropic's tool results come from the user)
    kind: Kind
    text: str = ""  # a tool call's text is its arguments as JSON; an image's is empty
    name: str | None = None  # a tool call's tool name
    type: str | None = None  # the provider's own part type (`input_image`, `tool_use`, `refusal`, …)
    ref: str | None = None  # a tool call's or result's call id; an image's or file's URL / file id
    msg: int = 0  # which message (or top-level prompt field) of the request it belongs to


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _content(role: str, content: Any, depth: int = 0) -> Iterator[Part]:
    """The parts of one message's `content`: a string, a list of typed parts, or one part."""
    if content is None or depth > MAX_DEPTH:
        return
    if isinstance(content, str):
        yield Part(role, "text", content)
    elif isinstance(content, list):
        for item in content:
            yield from _content(role, item, depth + 1)
    elif isinstance(content, dict):
        ptype = content.get("type")
        kind = _KINDS.get(ptype, "other") if isinstance(ptype, str) else "other"
        if kind in ("image", "audio", "file", "reference"):
            url = content.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            source = content.get("source")
            if url is None and isinstance(source, dict):
                url = source.get("url") or source.get("media_type")
            yield Part(role, kind, "", type=ptype, ref=_str(url or content.get("file_id") or content.get("id")))
        elif kind == "tool_call":
            args = content.get("input", content.get("arguments"))
            yield Part(role, "tool_call", _json(args) if args is not None else "", _str(content.get("name")), ptype,
                       ref=_str(content.get("id") or content.get("call_id")))  # fmt: skip
        elif kind == "tool_result":
            inner = content.get("content", content.get("output"))
            text = (
                " ".join(p.text for p in _content(role, inner, depth + 1) if p.text)
                if not isinstance(inner, str)
                else inner
            )
            yield Part(
                role, "tool_result", text, type=ptype, ref=_str(content.get("tool_use_id") or content.get("call_id"))
            )
        elif kind == "thinking":
            summary = content.get("summary")
            text = content.get("thinking") if isinstance(content.get("thinking"), str) else ""
            if not text and isinstance(summary, list):
                text = "\n".join(
                    s.get("text", "") for s in summary if isinstance(s, dict) and isinstance(s.get("text"), str)
                )
            yield Part(role, "thinking", text, type=ptype)
        else:
            for key in _TEXT_KEYS:
                value = content.get(key)
                if isinstance(value, str):
                    yield Part(role, "text", value, type=ptype if isinstance(ptype, str) else None)
                    return
                if value is not None:
                    yield from _content(role, value, depth + 1)
                    return


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _role(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default


def _chat_message(m: Any) -> Iterator[Part]:
    if isinstance(m, str):
        yield Part("user", "text", m)
        return
    if not isinstance(m, dict):
        return
    role = _role(m.get("role"), "user")
    if role in ("tool", "function"):
        content = m.get("content")
        text = (
            " ".join(p.text for p in _content("tool", content) if p.text)
            if isinstance(content, list)
            else _json(content)
        )
        yield Part("tool", "tool_result", text, type="tool", ref=_str(m.get("tool_call_id")))
        return
    yield from _content(role, m.get("content"))
    if isinstance(m.get("refusal"), str):
        yield Part(role, "text", m["refusal"], type="refusal")
    if isinstance(m.get("reasoning_content"), str):  # DeepSeek and other OpenAI-compatible reasoners
        yield Part(role, "thinking", m["reasoning_content"], type="reasoning_content")
    for call in m.get("tool_calls") or () if isinstance(m.get("tool_calls"), list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            yield Part(
                role,
                "tool_call",
                _json(fn.get("arguments", "")),
                _str(fn.get("name")),
                "function",
                ref=_str(call.get("id")),
            )
    if isinstance(m.get("function_call"), dict):
        fn = m["function_call"]
        yield Part(role, "tool_call", _json(fn.get("arguments", "")), _str(fn.get("name")), "function")


def _responses_item(item: Any) -> Iterator[Part]:
    if isinstance(item, str):
        yield Part("user", "text", item)
        return
    if not isinstance(item, dict):
        return
    itype = item.get("type")
    if itype in (None, "message"):
        yield from _content(_role(item.get("role"), "user"), item.get("content"))
        return
    kind = _KINDS.get(itype, "other") if isinstance(itype, str) else "other"
    if kind == "tool_call":
        yield Part("assistant", "tool_call", _json(item.get("arguments", item.get("input", ""))), _str(item.get("name")), itype,
                   ref=_str(item.get("call_id")))  # fmt: skip
    elif kind == "tool_result":
        yield Part("tool", "tool_result", _json(item.get("output", "")), type=itype, ref=_str(item.get("call_id")))
    else:
        yield from _content(_role(item.get("role"), "assistant"), item)


_GEMINI_ROLES = {"user": "user", "model": "assistant", "function": "tool", "tool": "tool", "system": "system"}


def gemini_field(d: dict[str, Any], camel: str) -> Any:
    """A Gemini REST field by its camelCase name or its snake_case spelling (the API accepts both)."""
    if camel in d:
        return d[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return d.get(snake)


def _gemini_content(content: Any, default_role: str, *, role: str | None = None) -> Iterator[Part]:
    """One Gemini `Content` ({role, parts}) — or a bare string or part list, as the SDKs also send."""
    if isinstance(content, str):
        yield Part(default_role, "text", content)
        return
    if isinstance(content, list):
        parts: Any = content
        role = role or default_role
    elif isinstance(content, dict):
        parts = content.get("parts")
        given = content.get("role")
        role = role or _GEMINI_ROLES.get(given if isinstance(given, str) else "", default_role)
    else:
        return
    for part in parts if isinstance(parts, list) else ():
        if isinstance(part, str):
            yield Part(role, "text", part)
        elif isinstance(part, dict):
            yield from _gemini_part(role, part)


def _gemini_part(role: str, part: dict[str, Any]) -> Iterator[Part]:
    if isinstance(part.get("text"), str):
        yield Part(role, "thinking" if part.get("thought") is True else "text", part["text"], type="text")
        return
    inline = gemini_field(part, "inlineData")
    data = inline if isinstance(inline, dict) else gemini_field(part, "fileData")
    if isinstance(data, dict):
        mime = str(gemini_field(data, "mimeType") or "")
        kind: Kind = "image" if mime.startswith("image/") else "audio" if mime.startswith("audio/") else "file"
        yield Part(role, kind, "", type="inlineData" if data is inline else "fileData",
                   ref=_str(gemini_field(data, "fileUri")) or mime or None)  # fmt: skip
        return
    call = gemini_field(part, "functionCall")
    if isinstance(call, dict):
        args = call.get("args")
        yield Part(role, "tool_call", _json(args if args is not None else {}), _str(call.get("name")), "functionCall",
                   ref=_str(call.get("id")))  # fmt: skip
        return
    result = gemini_field(part, "functionResponse")
    if isinstance(result, dict):
        yield Part("tool", "tool_result", _json(result.get("response", "")), _str(result.get("name")),
                   "functionResponse", ref=_str(result.get("id")))  # fmt: skip
        return
    code = gemini_field(part, "executableCode") or gemini_field(part, "codeExecutionResult")
    if isinstance(code, dict):
        yield Part(role, "other", _str(code.get("code")) or _str(code.get("output")) or "", type="code")


def _gemini_request(body: dict[str, Any]) -> list[Iterator[Part] | list[Part]]:
    groups: list[Iterator[Part] | list[Part]] = []
    system = gemini_field(body, "systemInstruction")
    if system is not None:
        groups.append(_gemini_content(system, "system", role="system"))  # google-genai sends it as role "user"
    contents = body.get("contents")
    if isinstance(contents, list) and contents and all(isinstance(c, dict) and "parts" in c for c in contents):
        groups += (_gemini_content(c, "user") for c in contents)
    elif contents is not None:
        groups.append(_gemini_content(contents if isinstance(contents, (str, list)) else [contents], "user"))
    for request in body.get("requests") or () if isinstance(body.get("requests"), list) else ():
        if isinstance(request, dict):  # batchEmbedContents: each request's `content`
            groups.append(_gemini_content(request.get("content"), "user"))
    if "content" in body and "contents" not in body:  # embedContent
        groups.append(_gemini_content(body["content"], "user"))
    return groups


def is_gemini_body(body: dict[str, Any]) -> bool:
    """A Gemini request: `contents` (generateContent), `requests` (batchEmbedContents) or `content`
    (embedContent) — fields none of the other shapes sends at the top level."""
    return "contents" in body or (
        "messages" not in body and "input" not in body and ("requests" in body or "content" in body)
    )


def request_parts(body: Any) -> list[Part]:
    """Every part a request sends, in order: system prompt first, then the conversation."""
    if not isinstance(body, dict):
        return []
    gemini = is_gemini_body(body)
    groups: list[Iterator[Part] | list[Part]] = _gemini_request(body) if gemini else []
    if "system" in body:  # Anthropic: a top-level string or text blocks
        groups.append(_content("system", body["system"]))
    if isinstance(body.get("instructions"), str):  # Responses
        groups.append([Part("system", "text", body["instructions"], type="instructions")])
    messages = body.get("messages")
    if isinstance(messages, list):
        groups += (_chat_message(m) for m in messages)
    elif not gemini:
        inp = body.get("input")
        if isinstance(inp, list):
            groups += (_responses_item(item) for item in inp)
        elif inp is not None:
            groups.append(_content("user", inp))
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            groups.append([Part("user", "text", prompt, type="prompt")])
        elif isinstance(prompt, list):
            groups.append([Part("user", "text", p, type="prompt") for p in prompt if isinstance(p, str)])
    parts: list[Part] = []
    for i, group in enumerate(groups):
        for part in group:
            part.msg = i
            parts.append(part)
    return parts


def answer_parts(body: Any) -> list[Part]:
    """What an answer says (its first choice): text, refusals, tool calls, thinking — any API's shape."""
    if not isinstance(body, dict):
        return []
    choices = body.get("choices")
    if isinstance(choices, list) and choices:  # chat / completions
        first = choices[0] if isinstance(choices[0], dict) else {}
        if isinstance(first.get("message"), dict):
            return list(_chat_message({**first["message"], "role": "assistant"}))
        return [Part("assistant", "text", first["text"])] if isinstance(first.get("text"), str) else []
    if isinstance(body.get("output"), list):  # Responses
        return [p for item in body["output"] for p in _responses_item({"role": "assistant", **item})
                if isinstance(item, dict)]  # fmt: skip
    if isinstance(body.get("content"), list):  # Anthropic Messages
        return list(_content("assistant", body["content"]))
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):  # Gemini
        return list(_gemini_content(candidates[0].get("content"), "assistant"))
    return []


def text_of(parts: list[Part], *, role: str | None = None, kinds: tuple[Kind, ...] = ("text",)) -> str:
    """The parts' text joined by newlines, optionally only one role's and only some kinds."""
    return "\n".join(p.text for p in parts if p.kind in kinds and (role is None or p.role == role) and p.text)
