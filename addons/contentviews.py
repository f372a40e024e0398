"""mitmweb / mitmproxy content views for LLM traffic (the mitmproxy 12 `Contentview` API).

- "LLM Conversation": a chat-completions / responses / completions / Anthropic Messages / Gemini request as
  a readable conversation (model and parameters, tool definitions, each message with its role,
  tool calls and tool results, read by ledger/messages.py), and a non-streamed answer the same way.
- "LLM Stream": a streamed answer (SSE, or Gemini's JSON-array stream) as the assembled answer (the
  same assembler the ledger uses) followed by its events, one line each.

Both rank above the JSON view only for LLM paths; everywhere else they step aside. The
`ContentViews` addon registers them when turnout's addons load.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import contentviews, http
from mitmproxy.contentviews import Contentview, Metadata

from turnout.ledger.messages import Part, answer_parts, request_parts
from turnout.ledger.providers import anthropic as anthropic_provider
from turnout.ledger.providers import gemini as gemini_provider
from turnout.ledger.providers import openai as openai_provider
from turnout.ledger.sse import stream_parser

LLM_PATHS = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/completions": "completions",
             "/v1/messages": "messages"}  # fmt: skip
PRIORITY = 2.0  # the JSON view answers 1 for application/json
EVENT_PREVIEW = 200  # characters of each event's data in the event list


def llm_call(flow: Any) -> tuple[Any, str] | None:
    """(provider module, endpoint) when the flow is an LLM call — read from its host and path alone, so
    saved flows show the same (OpenAI's and Anthropic's paths also behind a base-URL prefix)."""
    request = getattr(flow, "request", None)
    if not isinstance(request, http.Request):
        return None
    if request.pretty_host.lower() in gemini_provider.hosts or ":" in request.path.split("?", 1)[0]:
        endpoint = gemini_provider.endpoint(request.path)
        if endpoint is not None:
            return gemini_provider, endpoint
    path = request.path.split("?", 1)[0].rstrip("/")
    for suffix, endpoint in LLM_PATHS.items():
        if path == suffix or path.endswith(suffix):
            return (anthropic_provider if endpoint == "messages" else openai_provider), endpoint
    return None


def llm_endpoint(flow: Any) -> str | None:
    call = llm_call(flow)
    return call[1] if call else None


def _is_stream_body(flow: Any, content_type: str) -> bool:
    call = llm_call(flow)
    if call is None:
        return False
    if content_type == "text/event-stream":
        return True
    provider, endpoint = call
    return provider.stream_framing(endpoint) == "json-array" and provider.wants_stream(endpoint, None)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tool_signature(tool: Any) -> str:
    if not isinstance(tool, dict):
        return str(tool)
    fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool  # chat nests, responses is flat
    name = fn.get("name") or tool.get("type", "?")
    params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    required = set(params.get("required") or ())
    args = ", ".join(
        f"{k}{'' if k in required else '?'}: {v.get('type', 'any') if isinstance(v, dict) else 'any'}"
        for k, v in props.items()
    )
    desc = fn.get("description")
    return f"{name}({args})" + (f" — {_clip(str(desc), 120)}" if desc else "")


def _part_line(p: Part) -> str:
    if p.kind == "text":
        return f"[refusal] {p.text}" if p.type == "refusal" else p.text
    if p.kind == "tool_call":
        return f"→ tool call {p.name}({p.text})" + (f"  [{p.ref}]" if p.ref else "")
    if p.kind == "thinking":
        return f"[thinking] {_clip(p.text, 400)}" if p.text else "[thinking] (hidden)"
    if p.kind in ("image", "file", "audio"):
        return f"[{p.kind}: {_clip(p.ref, 60)}]" if p.ref else f"[{p.kind}]"
    return f"[{p.type or p.kind}]"


def _messages(parts: list[Part]) -> list[str]:
    """One section per message: its role (or `tool result [id]`), then each part on its own line."""
    lines: list[str] = []
    i = 0
    while i < len(parts):
        j = i
        while j < len(parts) and parts[j].msg == parts[i].msg:
            j += 1
        group, first = parts[i:j], parts[i]
        if first.kind == "tool_result":
            lines += [_section("tool result", f"[{first.ref}]" if first.ref else ""), *(p.text for p in group), ""]
        else:
            lines.append(_section(first.type if first.type in ("instructions", "prompt") else first.role))
            lines += [_part_line(p) for p in group]
            lines.append("")
        i = j
    return lines


def _section(role: str, extra: str = "") -> str:
    return f"── {role}{' ' + extra if extra else ''} ──"


_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "seed",
           "reasoning_effort", "response_format", "tool_choice", "user", "store", "previous_response_id")  # fmt: skip


def render_request(endpoint: str, body: dict[str, Any]) -> str:
    """Any LLM request turnout parses (chat, responses, completions, Anthropic messages) as a conversation."""
    head = [f"model: {body.get('model')}"]
    if body.get("stream"):
        head.append("stream")
    for key in _PARAMS:
        if key in body and body[key] is not None:
            value = body[key]
            head.append(f"{key}={json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value}")
    lines = [" · ".join(head)]
    tools = body.get("tools") or []
    if tools:
        lines.append(f"tools ({len(tools)}):")
        lines += [f"  {_tool_signature(t)}" for t in tools]
    lines.append("")
    lines += _messages(request_parts(body))
    return "\n".join(lines).rstrip() + "\n"


def render_answer(body: Any) -> str:
    """A chat.completion / text_completion / response / Anthropic message as the answer people read."""
    if not isinstance(body, dict):
        return json.dumps(body, ensure_ascii=False, indent=2)
    lines = []
    if isinstance(body.get("error"), dict):
        err = body["error"]
        lines.append(f"error: {err.get('message')} ({err.get('type') or err.get('code')})")
    if body.get("model"):
        lines.append(f"model: {body['model']}")
    parts = answer_parts(body)
    if parts:
        lines.append(_section("assistant"))
        lines += [_part_line(p) for p in parts]
    choices = body.get("choices") if isinstance(body.get("choices"), list) else []
    finish = (choices[0].get("finish_reason") if choices and isinstance(choices[0], dict) else None) or body.get(
        "stop_reason"
    )
    if finish:
        lines.append(f"(finish: {finish})")
    if len(choices) > 1:
        lines.append(f"(+{len(choices) - 1} more choice(s): see the JSON view)")
    usage = body.get("usage")
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        lines += ["", f"usage: {prompt} prompt + {completion} completion tokens"]
    return "\n".join(lines).rstrip() + "\n"


def event_summary(event: str | None, data: str) -> str:
    """One SSE event on one line: what changed (delta text, tool-call pieces, finish, usage), not the boilerplate."""
    head = f"{event} " if event else ""
    try:
        chunk = json.loads(data)
    except ValueError:
        return head + _clip(data, EVENT_PREVIEW)
    if not isinstance(chunk, dict):
        return head + _clip(data, EVENT_PREVIEW)
    parts: list[str] = []
    if "choices" in chunk:  # chat.completion.chunk / text_completion
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            tag = f"[{choice.get('index', 0)}] " if choice.get("index") else ""
            if delta.get("role"):
                parts.append(f"{tag}role={delta['role']}")
            for key in ("content", "refusal"):
                if delta.get(key):
                    parts.append(f"{tag}{key}={json.dumps(delta[key], ensure_ascii=False)}")
            if isinstance(choice.get("text"), str) and choice["text"]:
                parts.append(f"{tag}text={json.dumps(choice['text'], ensure_ascii=False)}")
            for tc in delta.get("tool_calls") or ():
                if not isinstance(tc, dict):
                    continue
                fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
                bits = [f"tool_call[{tc.get('index', 0)}]"]
                if fn.get("name"):
                    bits.append(f"name={fn['name']}")
                if fn.get("arguments"):
                    bits.append(f"args+={json.dumps(fn['arguments'], ensure_ascii=False)}")
                parts.append(tag + " ".join(bits))
            if choice.get("finish_reason"):
                parts.append(f"{tag}finish={choice['finish_reason']}")
        if isinstance(chunk.get("usage"), dict):
            u = chunk["usage"]
            parts.append(f"usage {u.get('prompt_tokens')}+{u.get('completion_tokens')} tok")
        if "error" in chunk:
            parts.append(f"error {json.dumps(chunk['error'], ensure_ascii=False)}")
        return head + (" · ".join(parts) if parts else "(empty chunk)")
    kind = chunk.get("type")
    if isinstance(kind, str):  # responses API and Anthropic events
        if isinstance(chunk.get("delta"), str):
            return f"{kind} {json.dumps(chunk['delta'], ensure_ascii=False)}"
        delta = chunk.get("delta") if isinstance(chunk.get("delta"), dict) else {}
        for key in ("text", "partial_json", "thinking", "stop_reason"):
            if isinstance(delta.get(key), str):
                return f"{kind} {key}={json.dumps(delta[key], ensure_ascii=False)}"
        response = chunk.get("response") if isinstance(chunk.get("response"), dict) else None
        if response is not None:
            return f"{kind} status={response.get('status')}"
        return f"{kind} {_clip(data, EVENT_PREVIEW - len(kind))}"
    return head + _clip(data, EVENT_PREVIEW)


class LLMConversationContentview(Contentview):
    """Requests (and non-streamed answers) on LLM paths as a conversation."""

    @property
    def name(self) -> str:
        return "LLM Conversation"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        body = json.loads(data)
        endpoint = llm_endpoint(metadata.flow) or "chat"
        if isinstance(metadata.http_message, http.Response):
            return render_answer(body)
        if not isinstance(body, dict):
            raise ValueError("not an LLM request body")
        return render_request(endpoint, body)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not data or llm_endpoint(metadata.flow) is None:
            return -1
        ctype = metadata.content_type or ""
        if isinstance(metadata.http_message, http.Response) and _is_stream_body(metadata.flow, ctype):
            return -1
        if ctype.endswith("json") or data[:1] in (b"{", b"["):
            return PRIORITY
        return -1


class LLMStreamContentview(Contentview):
    """A server-sent-events answer: the assembled answer, then every event on one line."""

    @property
    def name(self) -> str:
        return "LLM Stream"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        provider, endpoint = llm_call(metadata.flow) or (openai_provider, "chat")
        parser = stream_parser(provider.stream_framing(endpoint))
        events = parser.feed(data) + parser.close()
        assembler = provider.stream_assembler(endpoint)
        for ev in events:
            assembler.feed(ev)
        result = assembler.result()
        lines = ["assembled answer:"]
        lines.append(render_answer(result).rstrip() if result is not None else "(nothing assembled)")
        if assembler.error:
            lines.append(f"stream error: {assembler.error}")
        if not assembler.done:
            lines.append("(the stream did not finish)")
        lines += ["", f"── {len(events)} events ──"]
        for i, ev in enumerate(events):
            lines.append(f"{i:>4} {event_summary(ev.event, ev.data)}")
        return "\n".join(lines) + "\n"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not data or not isinstance(metadata.http_message, http.Response):
            return -1
        return PRIORITY if _is_stream_body(metadata.flow, metadata.content_type or "") else -1


conversation_view = LLMConversationContentview()
stream_view = LLMStreamContentview()


class ContentViews:
    """Registers turnout's content views with mitmproxy (mitmweb, mitmproxy console, flow dumps)."""

    def load(self, loader) -> None:
        for view in (conversation_view, stream_view):
            if contentviews.registry.get(view.name.lower()) is not view:
                contentviews.add(view)
