"""Requests and answers between OpenAI chat, Anthropic Messages and Gemini, for failover.

OpenAI's chat format is the hub: a request is read into it (`to_hub`) and written out of it
(`from_hub`), an answer likewise, so each format needs two translations per direction, not one per
pair. What a target cannot say faithfully raises `Untranslatable` instead of being dropped: signed
thinking from another provider's turn, server-side tools, audio, several choices, logprobs, a
temperature outside the target's range. Failover then does not happen and the client gets the
original error. Pure functions on parsed JSON; nothing here knows about mitmproxy.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

FORMATS = ("openai", "anthropic", "gemini")
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; an OpenAI request may leave it out


class Untranslatable(ValueError):
    """The request or answer uses something the other format cannot express faithfully."""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in ("text", None))
    return "" if content is None else json.dumps(content)


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]+);base64,(?P<data>.*)$", re.S)


# ---------------------------------------------------------------- requests: into the hub


def request_to_hub(fmt: str, body: dict[str, Any], *, model: str | None = None, stream: bool = False) -> dict[str, Any]:
    """A request in `fmt` as an OpenAI chat request (Gemini's model and streaming come from its path)."""
    if fmt == "openai":
        _check_openai(body)
        return json.loads(json.dumps(body))
    if fmt == "anthropic":
        return _anthropic_request_to_hub(body)
    if fmt == "gemini":
        return _gemini_request_to_hub(body, model, stream)
    raise Untranslatable(f"unknown format {fmt}")


def _check_openai(body: dict[str, Any]) -> None:
    if not isinstance(body.get("messages"), list):
        raise Untranslatable("only chat completions fail over (this request has no messages)")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise Untranslatable("n > 1: the other providers answer one choice")
    for key in ("logprobs", "top_logprobs", "audio", "prediction", "web_search_options", "logit_bias"):
        if body.get(key):
            raise Untranslatable(f"uses {key}, which only OpenAI offers")
    if body.get("modalities") and body["modalities"] != ["text"]:
        raise Untranslatable("asks for non-text output")
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise Untranslatable("uses a built-in tool")
    for m in body["messages"]:
        content = m.get("content") if isinstance(m, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") not in ("text", "image_url"):
                raise Untranslatable(f"sends a {part.get('type')} part")


def _anthropic_request_to_hub(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("thinking") and (body["thinking"] or {}).get("type") not in (None, "disabled"):
        raise Untranslatable("extended thinking is Anthropic's")
    if body.get("mcp_servers") or body.get("container"):
        raise Untranslatable("uses Anthropic's server-side tools")
    out: dict[str, Any] = {"model": body.get("model"), "messages": []}
    system = body.get("system")
    if system:
        out["messages"].append({"role": "system", "content": _text_of(system)})
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        if isinstance(content, str):
            out["messages"].append({"role": role, "content": content})
            continue
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for block in content or ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif kind == "image":
                src = block.get("source") or {}
                if src.get("type") == "base64":
                    url = f"data:{src.get('media_type')};base64,{src.get('data')}"
                elif src.get("type") == "url":
                    url = src.get("url")
                else:
                    raise Untranslatable(f"an image from a {src.get('type')} source")
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "tool_use":
                calls.append({"id": block.get("id"), "type": "function",
                              "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input", {}))}})  # fmt: skip
            elif kind == "tool_result":
                result = block.get("content")
                if isinstance(result, list) and any(isinstance(b, dict) and b.get("type") != "text" for b in result):
                    raise Untranslatable("a tool result that is not text")
                if block.get("is_error"):
                    result = f"Error: {_text_of(result)}"
                out["messages"].append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": _text_of(result)}
                )
            elif kind in ("thinking", "redacted_thinking"):
                raise Untranslatable("signed thinking from an earlier Anthropic turn")
            else:
                raise Untranslatable(f"a {kind} block")
        if parts or calls:
            out["messages"].append(_hub_message(role, parts, calls))
    tools = []
    for t in body.get("tools") or ():
        if not isinstance(t, dict) or (t.get("type") not in (None, "custom")):
            raise Untranslatable(f"uses Anthropic's server tool {t.get('type') if isinstance(t, dict) else t}")
        tools.append({"type": "function", "function": {"name": t.get("name"), "description": t.get("description", ""),
                                                       "parameters": t.get("input_schema") or {"type": "object"}}})  # fmt: skip
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        out["tool_choice"] = (
            {"type": "function", "function": {"name": choice.get("name")}}
            if kind == "tool"
            else {"auto": "auto", "any": "required", "none": "none"}.get(kind, "auto")
        )
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    for src, dst in (("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                     ("stream", "stream")):  # fmt: skip
        if body.get(src) is not None:
            out[dst] = body[src]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("top_k") is not None:
        raise Untranslatable("top_k has no OpenAI equivalent")
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = user
    return out


def _gemini_request_to_hub(body: dict[str, Any], model: str | None, stream: bool) -> dict[str, Any]:
    g = _camel
    out: dict[str, Any] = {"model": model, "messages": []}
    if stream:
        out["stream"] = True
    system = g(body, "systemInstruction")
    if system:
        out["messages"].append({"role": "system", "content": _gemini_text(system)})
    names: dict[str, list[str]] = {}  # function name -> ids of its calls not yet answered, oldest first
    for content in body.get("contents") or ():
        if not isinstance(content, dict):
            continue
        role = "assistant" if content.get("role") == "model" else "user"
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for part in content.get("parts") or ():
            if not isinstance(part, dict):
                continue
            if part.get("thought") or g(part, "thoughtSignature"):
                raise Untranslatable("Gemini thinking from an earlier turn")
            if isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif g(part, "inlineData"):
                data = g(part, "inlineData")
                mime = g(data, "mimeType") or ""
                if not mime.startswith("image/"):
                    raise Untranslatable(f"inline {mime or 'data'} other than an image")
                parts.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data.get('data')}"}})
            elif g(part, "functionCall"):
                call = g(part, "functionCall")
                cid = call.get("id") or f"call_{uuid.uuid4().hex[:20]}"
                names.setdefault(call.get("name"), []).append(cid)
                calls.append({"id": cid, "type": "function",
                              "function": {"name": call.get("name"), "arguments": json.dumps(call.get("args") or {})}})  # fmt: skip
            elif g(part, "functionResponse"):
                result = g(part, "functionResponse")
                pending = names.get(result.get("name")) or []
                cid = result.get("id") or (pending.pop(0) if pending else f"call_{uuid.uuid4().hex[:20]}")
                if result.get("id") in pending:
                    pending.remove(result["id"])
                response = result.get("response")
                text = json.dumps(response) if not isinstance(response, str) else response
                out["messages"].append({"role": "tool", "tool_call_id": cid, "content": text})
            else:
                raise Untranslatable(f"a Gemini part with {sorted(part)}")
        if parts or calls:
            out["messages"].append(_hub_message(role, parts, calls))
    tools = []
    for t in body.get("tools") or ():
        decls = g(t, "functionDeclarations") if isinstance(t, dict) else None
        if not decls or set(t) - {"functionDeclarations", "function_declarations"}:
            raise Untranslatable("uses Google's server-side tools")
        for d in decls:
            params = g(d, "parametersJsonSchema") or d.get("parameters") or {"type": "object"}
            tools.append({"type": "function", "function": {"name": d.get("name"),
                          "description": d.get("description", ""), "parameters": _lower_types(params)}})  # fmt: skip
    if tools:
        out["tools"] = tools
    calling = g(g(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = str(calling.get("mode") or "").upper()
    allowed = g(calling, "allowedFunctionNames") or []
    if mode == "ANY" and len(allowed) == 1:
        out["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
    elif mode:
        out["tool_choice"] = {"ANY": "required", "NONE": "none"}.get(mode, "auto")
    config = g(body, "generationConfig") or {}
    for src, dst in (("maxOutputTokens", "max_tokens"), ("temperature", "temperature"), ("topP", "top_p"),
                     ("stopSequences", "stop"), ("seed", "seed")):  # fmt: skip
        value = g(config, src)
        if value is not None:
            out[dst] = value
    if (g(config, "candidateCount") or 1) > 1:
        raise Untranslatable("candidateCount > 1")
    thinking = g(config, "thinkingConfig") or {}
    thinking_off = (
        g(thinking, "thinkingBudget") in (None, 0)
        and not g(thinking, "includeThoughts")
        and not g(thinking, "thinkingLevel")
    )
    if not thinking_off or g(config, "responseModalities") or g(config, "topK") is not None:
        raise Untranslatable("uses a Gemini-only generation setting (thinking, output modalities or topK)")
    if g(config, "responseMimeType") == "application/json":
        schema = g(config, "responseJsonSchema") or g(config, "responseSchema")
        out["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": _lower_types(schema)}}
            if schema
            else {"type": "json_object"}
        )
    return out


def _hub_message(role: Any, parts: list[dict[str, Any]], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """One hub message: plain text when it is only text, parts when it carries an image; its tool calls."""
    only_text = all(p["type"] == "text" for p in parts)
    msg: dict[str, Any] = {"role": role, "content": "".join(p["text"] for p in parts) or None if only_text else parts}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _camel(d: Any, camel: str) -> Any:
    if not isinstance(d, dict):
        return None
    if camel in d:
        return d[camel]
    return d.get("".join(f"_{c.lower()}" if c.isupper() else c for c in camel))


def _gemini_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content.get("parts") if isinstance(content, dict) else content
    return "".join(p.get("text", "") for p in parts or () if isinstance(p, dict))


def _lower_types(schema: Any) -> Any:
    """Gemini's OpenAPI-style schemas spell types in capitals (`OBJECT`); JSON Schema in lower case."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


# ---------------------------------------------------------------- requests: out of the hub


def request_from_hub(fmt: str, hub: dict[str, Any], model: str) -> dict[str, Any]:
    """The hub request as `fmt` would take it, for `model` (Gemini's model goes in the path: see
    `gemini_path`)."""
    _check_openai(hub)
    if fmt == "openai":
        out = json.loads(json.dumps(hub))
        out["model"] = model
        if out.get("stream"):
            out["stream_options"] = {"include_usage": True}
        return out
    if fmt == "anthropic":
        return _hub_to_anthropic(hub, model)
    if fmt == "gemini":
        return _hub_to_gemini(hub)
    raise Untranslatable(f"unknown format {fmt}")


def gemini_path(model: str, stream: bool) -> str:
    return (
        f"/v1beta/models/{model}:streamGenerateContent?alt=sse" if stream else f"/v1beta/models/{model}:generateContent"
    )


def _image_url(part: dict[str, Any]) -> str:
    url = part.get("image_url")
    return url.get("url", "") if isinstance(url, dict) else str(url or "")


def _merged_append(turns: list[dict[str, Any]], role: str, key: str, items: list[dict[str, Any]]) -> None:
    """Add a turn; Anthropic and Gemini alternate roles, so a turn of the last one's role joins it."""
    if turns and turns[-1]["role"] == role:
        turns[-1][key] += items
    else:
        turns.append({"role": role, key: items})


def _call_arguments(fn: dict[str, Any]) -> Any:
    """A request's tool call arguments, parsed: a target takes them as an object, so broken JSON is refused."""
    try:
        return json.loads(fn.get("arguments") or "{}")
    except ValueError:
        raise Untranslatable("a tool call whose arguments are not JSON") from None


def _hub_to_anthropic(hub: dict[str, Any], model: str) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        _merged_append(messages, role, "content", blocks)

    for m in hub["messages"]:
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            system.append(_text_of(content))
            continue
        if role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id"), "content": _text_of(content)}])
            continue
        blocks: list[dict[str, Any]] = []
        if isinstance(content, str) and content:
            blocks.append({"type": "text", "text": content})
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "text":
                blocks.append({"type": "text", "text": part.get("text", "")})
            elif part.get("type") == "image_url":
                url = _image_url(part)
                m_ = _DATA_URL.match(url)
                source = (
                    {"type": "base64", "media_type": m_.group("mime"), "data": m_.group("data")}
                    if m_
                    else {"type": "url", "url": url}
                )
                blocks.append({"type": "image", "source": source})
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            args = _call_arguments(fn)
            blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args})
        if blocks:
            add("assistant" if role == "assistant" else "user", blocks)
    for m in messages:  # one text block is plain text, as a client would write it
        if len(m["content"]) == 1 and m["content"][0]["type"] == "text":
            m["content"] = m["content"][0]["text"]
    out: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    limit = hub.get("max_completion_tokens", hub.get("max_tokens"))
    out["max_tokens"] = limit if isinstance(limit, int) else ANTHROPIC_DEFAULT_MAX_TOKENS
    temperature = hub.get("temperature")
    if temperature is not None:
        if temperature > 1:
            raise Untranslatable(f"temperature {temperature} is past Anthropic's 0–1")
        out["temperature"] = temperature
    if hub.get("top_p") is not None:
        out["top_p"] = hub["top_p"]
    stop = hub.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if hub.get("stream"):
        out["stream"] = True
    if hub.get("user"):
        out["metadata"] = {"user_id": hub["user"]}
    if hub.get("tools"):
        out["tools"] = [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
            for t in hub["tools"]
        ]  # fmt: skip
    choice = hub.get("tool_choice")
    if choice is not None:
        if isinstance(choice, dict):
            out["tool_choice"] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
        else:
            out["tool_choice"] = {"type": {"required": "any"}.get(choice, choice)}
        if hub.get("parallel_tool_calls") is False:
            out["tool_choice"]["disable_parallel_tool_use"] = True
    rf = (hub.get("response_format") or {}).get("type")
    if rf in ("json_object", "json_schema"):
        raise Untranslatable("JSON mode: Anthropic's Messages API has no equivalent to hold it to")
    return out


def _hub_to_gemini(hub: dict[str, Any]) -> dict[str, Any]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name (a functionResponse names the function)

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        _merged_append(contents, role, "parts", parts)

    for m in hub["messages"]:
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            system.append(_text_of(content))
            continue
        if role == "tool":
            text = _text_of(content)
            try:
                response = json.loads(text)
            except ValueError:
                response = None
            if not isinstance(response, dict):
                response = {"content": text}
            cid = m.get("tool_call_id")
            add("user", [{"functionResponse": {"name": names.get(cid, ""), "response": response}}])
            continue
        parts: list[dict[str, Any]] = []
        if isinstance(content, str) and content:
            parts.append({"text": content})
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "text":
                parts.append({"text": part.get("text", "")})
            elif part.get("type") == "image_url":
                m_ = _DATA_URL.match(_image_url(part))
                if not m_:
                    raise Untranslatable("an image by URL: Gemini takes inline data or its own file URIs")
                parts.append({"inlineData": {"mimeType": m_.group("mime"), "data": m_.group("data")}})
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            args = _call_arguments(fn)
            names[call.get("id")] = fn.get("name")
            parts.append({"functionCall": {"name": fn.get("name"), "args": args}})
        if parts:
            add("model" if role == "assistant" else "user", parts)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    limit = hub.get("max_completion_tokens", hub.get("max_tokens"))
    if isinstance(limit, int):
        config["maxOutputTokens"] = limit
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if hub.get(src) is not None:
            config[dst] = hub[src]
    stop = hub.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    rf = hub.get("response_format") or {}
    if rf.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (rf.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = schema
    if config:
        out["generationConfig"] = config
    if hub.get("tools"):
        out["tools"] = [{"functionDeclarations": [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "parametersJsonSchema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
            for t in hub["tools"]
        ]}]  # fmt: skip
    choice = hub.get("tool_choice")
    if choice is not None:
        if isinstance(choice, dict):
            calling = {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name")]}
        else:
            calling = {"mode": {"required": "ANY", "none": "NONE"}.get(choice, "AUTO")}
        out["toolConfig"] = {"functionCallingConfig": calling}
    return out


# ---------------------------------------------------------------- answers

OPENAI_FINISH_FROM_ANTHROPIC = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                                "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}  # fmt: skip
ANTHROPIC_STOP_FROM_OPENAI = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                              "content_filter": "refusal", "function_call": "tool_use"}  # fmt: skip
OPENAI_FINISH_FROM_GEMINI = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                             "RECITATION": "content_filter", "PROHIBITED_CONTENT": "content_filter",
                             "BLOCKLIST": "content_filter", "SPII": "content_filter"}  # fmt: skip
GEMINI_FINISH_FROM_OPENAI = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP",
                             "content_filter": "SAFETY"}  # fmt: skip


def answer_to_hub(fmt: str, answer: dict[str, Any], model: str) -> dict[str, Any]:
    """A target's (non-streamed) answer as an OpenAI chat completion."""
    if fmt == "openai":
        return answer
    if fmt == "anthropic":
        text = "".join(b.get("text", "") for b in answer.get("content") or () if b.get("type") == "text")
        calls = [
            {"id": b.get("id"), "type": "function",
             "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input", {}))}}
            for b in answer.get("content") or () if b.get("type") == "tool_use"
        ]  # fmt: skip
        u = answer.get("usage") or {}
        read, write = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
        usage = {"prompt_tokens": (u.get("input_tokens") or 0) + read + write,
                 "completion_tokens": u.get("output_tokens") or 0, "prompt_tokens_details": {"cached_tokens": read}}  # fmt: skip
        finish = OPENAI_FINISH_FROM_ANTHROPIC.get(answer.get("stop_reason") or "", "stop")
        return _completion(answer.get("id"), answer.get("model") or model, text, calls, finish, usage)
    if fmt == "gemini":
        cand = (answer.get("candidates") or [{}])[0] or {}
        parts = (cand.get("content") or {}).get("parts") or ()
        text = "".join(p.get("text", "") for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
        calls = [
            {"id": (p["functionCall"].get("id") or f"call_{uuid.uuid4().hex[:20]}"), "type": "function",
             "function": {"name": p["functionCall"].get("name"), "arguments": json.dumps(p["functionCall"].get("args") or {})}}
            for p in parts if isinstance(p.get("functionCall"), dict)
        ]  # fmt: skip
        blocked = (answer.get("promptFeedback") or {}).get("blockReason")
        finish = (
            "tool_calls"
            if calls
            else "content_filter"
            if blocked and not answer.get("candidates")
            else OPENAI_FINISH_FROM_GEMINI.get(cand.get("finishReason") or "STOP", "stop")
        )
        return _completion(answer.get("responseId"), answer.get("modelVersion") or model, text, calls, finish,
                           gemini_usage_to_hub(answer.get("usageMetadata")))  # fmt: skip
    raise Untranslatable(f"unknown format {fmt}")


def gemini_usage_to_hub(meta: Any) -> dict[str, Any] | None:
    if not isinstance(meta, dict):
        return None
    thoughts = meta.get("thoughtsTokenCount") or 0
    return {
        "prompt_tokens": (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0),
        "completion_tokens": (meta.get("candidatesTokenCount") or 0) + thoughts,
        "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount") or 0},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _completion(cid: Any, model: str, text: str, calls: list[dict[str, Any]], finish: str,
                usage: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": cid or f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
        out["usage"] = usage
    return out


def answer_from_hub(fmt: str, hub: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion as `fmt`'s answer, for a client that asked in `fmt`."""
    if fmt == "openai":
        return hub
    choice = (hub.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    calls = message.get("tool_calls") or []
    u = hub.get("usage") or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    if fmt == "anthropic":
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        for c in calls:
            fn = c.get("function") or {}
            content.append({"type": "tool_use", "id": c.get("id"), "name": fn.get("name"),
                            "input": _args(fn.get("arguments"))})  # fmt: skip
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": hub.get("model"),
            "content": content, "stop_sequence": None,
            "stop_reason": ANTHROPIC_STOP_FROM_OPENAI.get(choice.get("finish_reason") or "stop", "end_turn"),
            "usage": {"input_tokens": (u.get("prompt_tokens") or 0) - cached, "output_tokens": u.get("completion_tokens") or 0,
                      "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0},
        }  # fmt: skip
    if fmt == "gemini":
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        for c in calls:
            fn = c.get("function") or {}
            parts.append({"functionCall": {"name": fn.get("name"), "args": _args(fn.get("arguments"))}})
        out: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0,
                            "finishReason": GEMINI_FINISH_FROM_OPENAI.get(choice.get("finish_reason") or "stop", "STOP")}],
            "modelVersion": hub.get("model"),
            "responseId": hub.get("id"),
        }  # fmt: skip
        if u:
            out["usageMetadata"] = gemini_usage_from_hub(u)
        return out
    raise Untranslatable(f"unknown format {fmt}")


def _args(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as an object: a call cut off at the output limit may carry broken JSON, and
    the answer is still the client's (its finish reason says `length`)."""
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {"value": value}


def gemini_usage_from_hub(u: dict[str, Any]) -> dict[str, Any]:
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    out = {
        "promptTokenCount": u.get("prompt_tokens") or 0,
        "candidatesTokenCount": (u.get("completion_tokens") or 0) - reasoning,
        "totalTokenCount": (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0),
    }
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    if cached:
        out["cachedContentTokenCount"] = cached
    if reasoning:
        out["thoughtsTokenCount"] = reasoning
    return out
