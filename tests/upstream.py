"""A local server for tests and benchmarks speaking OpenAI's (chat streamed or not, tools, responses,
embeddings, legacy completions), Anthropic's Messages and Gemini's wire formats, with errors on demand
(Gemini: model `error-NNN` in the path; header `x-test-retry-after` sets a 429's `retry-after`).

Behaviour is chosen by the request, as a client would choose it:
- model `error-429` / `error-500` / `error-400` answer that status with an OpenAI error body;
- a request with `tools` answers with a tool call (unless the last message is a tool result);
- headers `x-test-chunks` and `x-test-delay-ms` shape a stream (default 5 chunks, no delay; the
  closing events — usage chunk, [DONE], message_stop — follow the last one at once);
- header `x-test-hang-ms` delays the whole answer (timeouts, aborts);
- header `x-test-set-cookie` adds that `set-cookie` to the answer (a provider edge's cookie);
- header `x-test-no-usage` makes a chat stream leave out usage even when asked (as some servers do);
- header `x-test-pieces` (a JSON list of strings) sets a chat answer's text, one stream chunk a piece;
- header `x-test-body` (a JSON string) answers 200 with exactly that body, and `x-test-cut` sends a
  content-length that many bytes longer than the body and then closes (a body cut short).
- scripted answers, for shadow evaluations: a directive `[[answer: TEXT]]` anywhere in the prompt makes
  the answer TEXT; `[[cheap-answer: TEXT]]` overrides it for the cheaper models (names with mini, nano,
  haiku, flash or lite). Likewise `[[tool: NAME {json args}]]` / `[[cheap-tool: …]]` (the tool call a
  request with `tools` gets), `[[cheap-finish: length]]` (its finish_reason) and `[[cheap-refuse]]` (a
  refusal), `[[fingerprint: FP]]` (the answer's system_fingerprint), `[[die-after: N]]` (a stream closes its
  socket after N events, unfinished). Requests whose system prompt is turnout's judge prompt are judged: the answer holding
  `#worse` loses, otherwise TIE; `#biased` in the request makes the judge always answer A.
Every request received is kept in `server.requests` (method, path, headers, parsed body).

Run standalone: `python tests/upstream.py --port 9999`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _gemini_text(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, dict):
        content = content.get("parts")
    out = []
    for part in content if isinstance(content, list) else ():
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif isinstance(part, dict) and "parts" in part:
            out += _gemini_text(part)
    return out


def _prompt_text(body: dict[str, Any]) -> str:
    if "contents" in body:
        contents = body["contents"]
        items = contents if isinstance(contents, list) else [contents]
        return " ".join(t for c in items for t in _gemini_text(c))
    if isinstance(body.get("messages"), list):
        parts = []
        for m in body["messages"]:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):
                parts += [p.get("text", "") for p in c if isinstance(p, dict)]
        return " ".join(parts)
    if "input" in body:
        return json.dumps(body["input"]) if not isinstance(body["input"], str) else body["input"]
    return str(body.get("prompt", ""))


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return _prompt_text(body)


_GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>\w+)$")
_DIRECTIVE = re.compile(r"\[\[([a-z][a-z-]*)(?::\s*(.*?))?\]\]", re.S)
JUDGE_OPENING = "You compare two answers"


def _all_text(body: dict[str, Any]) -> str:
    system = body.get("system") or " ".join(
        _gemini_text(body.get("systemInstruction") or body.get("system_instruction"))
    )
    parts = [system if isinstance(system, str) else json.dumps(system)] if system else []
    parts.append(_prompt_text(body))
    return " ".join(parts)


def is_cheap(model: Any) -> bool:
    return isinstance(model, str) and any(k in model for k in ("mini", "nano", "haiku", "flash", "lite"))


def scripted(body: dict[str, Any], key: str) -> str | None:
    """The prompt's `[[key: …]]` directive — its `[[cheap-key: …]]` one for a cheaper model; None when absent."""
    found = {m.group(1): (m.group(2) or "").strip() for m in _DIRECTIVE.finditer(_all_text(body))}
    if is_cheap(body.get("model")) and f"cheap-{key}" in found:
        return found[f"cheap-{key}"]
    return found.get(key)


def _is_judge(body: dict[str, Any]) -> bool:
    msgs = body.get("messages") or []
    system = body.get("system") or (
        msgs[0].get("content") if msgs and isinstance(msgs[0], dict) and msgs[0].get("role") == "system" else ""
    )
    return isinstance(system, str) and system.startswith(JUDGE_OPENING)


def judge_answer(body: dict[str, Any]) -> str:
    text = _prompt_text(body)
    a = re.search(r"<answer_A>(.*?)</answer_A>", text, re.S)
    b = re.search(r"<answer_B>(.*?)</answer_B>", text, re.S)
    if "#biased" in text:
        return "A"
    worse_a, worse_b = bool(a and "#worse" in a.group(1)), bool(b and "#worse" in b.group(1))
    return "A" if worse_b and not worse_a else "B" if worse_a and not worse_b else "TIE"


def answer_text(body: dict[str, Any]) -> str:
    if _is_judge(body):
        return judge_answer(body)
    text = scripted(body, "answer")
    return text if text is not None else f"echo from {body.get('model')}: {_last_user(body)[:200]}"


def tool_call_of(body: dict[str, Any], default_name: str) -> tuple[str, str]:
    """(name, arguments JSON) of the tool call a request with tools gets."""
    spec = scripted(body, "tool")
    if spec:
        name, _, args = spec.partition(" ")
        return name, args.strip() or "{}"
    return default_name, json.dumps({"city": "Paris", "unit": "c"})


def _usage(body: dict[str, Any], completion: str) -> dict[str, Any]:
    p, c = _words(_prompt_text(body)), _words(completion)
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _wants_tool(body: dict[str, Any]) -> bool:
    msgs = body.get("messages") or []
    return bool(body.get("tools")) and not (msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "tool")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Real upstreams (uvicorn, nginx, the providers' edges) set TCP_NODELAY; without it Nagle holds
    # the first SSE event behind the headers until the reader ACKs them (tens of milliseconds).
    disable_nagle_algorithm = True
    server: "UpstreamServer"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def end_headers(self) -> None:
        # a provider edge's cookie (Cloudflare's __cf_bm, say): asked for, or on every answer (server.set_cookie)
        cookie = self.headers.get("x-test-set-cookie") or self.server.set_cookie
        if cookie:
            self.send_header("set-cookie", cookie)
        super().end_headers()

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        gzip_it = "gzip" in self.headers.get("accept-encoding", "") and self.server.gzip_json
        if gzip_it:
            c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            data = c.compress(data) + c.flush()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
        if gzip_it:
            self.send_header("content-encoding", "gzip")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.server.aborted += 1

    def do_GET(self) -> None:
        self.server.log(self, None)
        if self.path.startswith("/v1/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("content-encoding") == "gzip":
            raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self.server.log(self, raw)
            self._send_json(
                400,
                {
                    "error": {
                        "message": "We could not parse the JSON body of your request.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        self.server.log(self, body)
        self.die_after = None
        if isinstance(body, dict) and scripted(body, "die-after") is not None:
            self.die_after = int(scripted(body, "die-after") or 0)
        if not isinstance(body, dict):
            self._send_json(
                400,
                {
                    "error": {
                        "message": "The request body must be a JSON object.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        if hang := int(self.headers.get("x-test-hang-ms") or 0):
            time.sleep(hang / 1000)
        if self.headers.get("x-test-body") is not None:
            data = json.loads(self.headers["x-test-body"]).encode()
            cut = int(self.headers.get("x-test-cut") or 0)
            self.send_response(200)
            self.send_header("content-type", self.headers.get("x-test-content-type") or "application/json")
            self.send_header("content-length", str(len(data) + cut))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            if cut:
                self.close_connection = True
            return
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and model.startswith("error-") and self.path.startswith("/v1/messages"):
            status = int(model.split("-")[1])
            kind = {429: "rate_limit_error", 500: "api_error", 400: "invalid_request_error"}.get(status, "api_error")
            self._send_json(
                status, {"type": "error", "error": {"type": kind, "message": f"test upstream says {status}"}}
            )
            return
        if isinstance(model, str) and model.startswith("error-"):
            status = int(model.split("-")[1])
            kind = {429: "rate_limit_exceeded", 500: "server_error", 400: "invalid_request_error"}.get(status, "error")
            self._send_json(
                status,
                {"error": {"message": f"test upstream says {status}", "type": kind, "param": None, "code": kind}},
                (
                    {"retry-after-ms": "10"}
                    | (
                        {"retry-after": self.headers["x-test-retry-after"]}
                        if self.headers.get("x-test-retry-after")
                        else {}
                    )
                )
                if status == 429
                else None,
            )
            return
        try:
            self.route(body)
        except Exception as e:  # noqa: BLE001 - a body a real provider would reject: say so, as it would
            self._send_json(
                400,
                {
                    "error": {
                        "message": f"invalid request: {type(e).__name__}: {e}"[:300],
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )

    def route(self, body: dict[str, Any]) -> None:
        path = self.path.split("?")[0]
        native = _GEMINI_PATH.match(path)
        if native:
            self.gemini(body, native.group("model"), native.group("method"))
        elif path == "/v1beta/openai/chat/completions":
            self.chat({**body, "stream_options": {"include_usage": True}}, usage_every_chunk=True)
        elif path == "/v1/chat/completions":
            self.chat(body)
        elif path == "/v1/completions":
            self.completions(body)
        elif path == "/v1/embeddings":
            self.embeddings(body)
        elif path == "/v1/responses":
            self.responses_api(body)
        elif path == "/v1/messages":
            self.messages(body)
        else:
            self._send_json(
                404, {"error": {"message": f"Invalid URL (POST {self.path})", "type": "invalid_request_error"}}
            )

    # -- endpoints ---------------------------------------------------------------------------

    def chat(self, body: dict[str, Any], usage_every_chunk: bool = False) -> None:
        created = int(time.time())
        cid = f"chatcmpl-{uuid.uuid4().hex[:20]}"
        text = answer_text(body)
        tool = _wants_tool(body)
        name, args = tool_call_of(body, body["tools"][0]["function"]["name"]) if tool else ("", "")
        tool_call = (
            {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": {"name": name, "arguments": args}}
            if tool
            else None
        )
        usage = _usage(body, text)
        finish = scripted(body, "finish") or ("tool_calls" if tool else "stop")
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if tool else text, "refusal": None}
            if tool:
                message["tool_calls"] = [tool_call]
            if scripted(body, "refuse") is not None:
                message.update(content=None, refusal="I can't help with that.")
            self._send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": scripted(body, "fingerprint") or "fp_test",
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not self.headers.get(
            "x-test-no-usage"
        )
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.get("model"),
            "system_fingerprint": "fp_test",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if usage_every_chunk:  # Gemini's OpenAI-compatible endpoint: running usage on every chunk
                c["usage"] = usage
            elif include_usage:
                c["usage"] = None
            return c

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if tool:
            args = tool_call["function"]["arguments"]
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": tool_call["id"],
                                "type": "function",
                                "function": {"name": tool_call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for i in range(0, len(args), 7):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 7]}}]}))
            events.append(chunk({}, "tool_calls"))
        elif self.headers.get("x-test-pieces"):
            for piece in json.loads(self.headers["x-test-pieces"]):
                events.append(chunk({"content": piece}))
            events.append(chunk({}, "stop"))
        else:
            n = int(self.headers.get("x-test-chunks") or 5)
            words = text.split(" ")
            pieces = [" ".join(words[i * len(words) // n : (i + 1) * len(words) // n]) for i in range(n)]
            for i, piece in enumerate(pieces):
                events.append(chunk({"content": (" " if i else "") + piece}))
            events.append(chunk({}, "stop"))
        if include_usage and not usage_every_chunk:
            events.append({**base, "choices": [], "usage": usage})
        # the usage chunk and [DONE] leave with the last one, as a provider sends them: no delay between
        tail = 1 + (include_usage and not usage_every_chunk)
        self._stream([json.dumps(e, separators=(",", ":")) for e in events] + ["[DONE]"], tail=tail)

    def completions(self, body: dict[str, Any]) -> None:
        text = f"completion of {str(body.get('prompt'))[:100]}"
        usage = {"prompt_tokens": _words(str(body.get("prompt"))), "completion_tokens": _words(text), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {
            "id": f"cmpl-{uuid.uuid4().hex[:20]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    **base,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = [
            {**base, "choices": [{"index": 0, "text": w + " ", "logprobs": None, "finish_reason": None}]}
            for w in text.split()
        ]
        events.append({**base, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]})
        if include_usage:
            events.append({**base, "choices": [], "usage": usage})
        self._stream([json.dumps(e) for e in events] + ["[DONE]"], tail=1 + include_usage)

    def embeddings(self, body: dict[str, Any]) -> None:
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [((zlib.crc32(str(x).encode()) >> k) % 100) / 100 for k in range(8)],
            }
            for i, x in enumerate(inputs)
        ]
        tokens = sum(_words(str(x)) for x in inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def responses_api(self, body: dict[str, Any]) -> None:
        text = f"echo from {body.get('model')}: {_prompt_text(body)[:200]}"
        rid = f"resp_{uuid.uuid4().hex[:20]}"
        msg_id = f"msg_{uuid.uuid4().hex[:20]}"
        p, c = _words(_prompt_text(body)), _words(text)
        usage = {
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": p + c,
        }
        item = {
            "id": msg_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        full = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body.get("model"),
            "output": [item],
            "usage": usage,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "metadata": {},
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
        }
        if not body.get("stream"):
            self._send_json(200, full)
            return
        in_progress = {**full, "status": "in_progress", "output": [], "usage": None}
        events = [
            ("response.created", {"type": "response.created", "response": in_progress, "sequence_number": 0}),
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": msg_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": text,
                    "sequence_number": 1,
                },
            ),
            ("response.completed", {"type": "response.completed", "response": full, "sequence_number": 2}),
        ]
        self._stream([json.dumps(d) for _, d in events], names=[n for n, _ in events])

    def messages(self, body: dict[str, Any]) -> None:
        """Anthropic's Messages API: text or tool_use content, usage with prompt-cache fields."""
        text = answer_text(body)
        read = int(self.headers.get("x-test-cache-read") or 0)
        usage = {
            "input_tokens": _words(_prompt_text(body)),
            "output_tokens": _words(text),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": read,
        }
        tool = bool(body.get("tools"))
        content = (
            [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:12]}",
                    "name": body["tools"][0]["name"],
                    "input": {"city": "Paris"},
                }
            ]
            if tool
            else [{"type": "text", "text": text}]
        )
        msg = {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": "tool_use" if tool else "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            self._send_json(200, msg)
            return
        events = [
            (
                "message_start",
                {"message": {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}},
            )
        ]
        for i, block in enumerate(content):
            if block["type"] == "text":
                events.append(("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}}))
                for w in block["text"].split(" "):
                    events.append(
                        ("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": w + " "}})
                    )
            else:
                events.append(("content_block_start", {"index": i, "content_block": {**block, "input": {}}}))
                args = json.dumps(block["input"])
                for j in range(0, len(args), 5):
                    events.append(
                        (
                            "content_block_delta",
                            {"index": i, "delta": {"type": "input_json_delta", "partial_json": args[j : j + 5]}},
                        )
                    )
            events.append(("content_block_stop", {"index": i}))
        events.append(
            (
                "message_delta",
                {
                    "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        events.append(("message_stop", {}))
        self._stream([json.dumps({"type": n, **d}) for n, d in events], names=[n for n, _ in events])

    def gemini(self, body: dict[str, Any], model: str, method: str) -> None:
        """Gemini's native API: generateContent, streamGenerateContent (SSE with alt=sse, else one JSON
        array), countTokens, embedContent; model `error-NNN` answers NNN with Google's error body."""
        if model.startswith("error-"):
            status = int(model.split("-")[1])
            name = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 400: "INVALID_ARGUMENT"}
            self._send_json(
                status,
                {
                    "error": {
                        "code": status,
                        "message": f"test upstream says {status}",
                        "status": name.get(status, "UNKNOWN"),
                    }
                },
                {"retry-after": "1"} if status == 429 else None,
            )
            return
        prompt = _words(_prompt_text(body))
        if method == "countTokens":
            self._send_json(200, {"totalTokens": prompt})
            return
        if method in ("embedContent", "batchEmbedContents"):
            one = {"values": [0.1, 0.2, 0.3]}
            n = len(body.get("requests") or [])
            self._send_json(200, {"embeddings": [one] * n} if method == "batchEmbedContents" else {"embedding": one})
            return
        gbody = {**body, "model": model}
        text = answer_text(gbody)
        decls = [
            d
            for t in body.get("tools") or ()
            for d in t.get("functionDeclarations") or t.get("function_declarations") or ()
        ]
        last = (body.get("contents") or [{}])[-1] if isinstance(body.get("contents"), list) else {}
        answered = any(
            "functionResponse" in p or "function_response" in p
            for p in (last.get("parts") or ())
            if isinstance(p, dict)
        )
        if decls and not answered:
            name, args = tool_call_of(gbody, decls[0]["name"])
            parts: list[dict[str, Any]] = [{"functionCall": {"name": name, "args": json.loads(args)}}]
        else:
            parts = [{"text": text}]
        thoughts = 3 if "thinkingConfig" in (body.get("generationConfig") or {}) else 0
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": _words(text),
            "totalTokenCount": prompt + _words(text),
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if self.headers.get("x-test-cache-read"):
            usage["cachedContentTokenCount"] = int(self.headers["x-test-cache-read"])
        rid = uuid.uuid4().hex[:16]
        whole = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": rid,
        }
        if method == "generateContent":
            self._send_json(200, whole)
            return
        if "functionCall" in parts[0]:
            pieces: list[dict[str, Any]] = [parts[0]]
        else:
            words = text.split(" ")
            n = min(int(self.headers.get("x-test-chunks") or 4), len(words))
            pieces = [{"text": (" " if i else "") + " ".join(words[i * len(words) // n : (i + 1) * len(words) // n])}
                      for i in range(n)]  # fmt: skip
        chunks = []
        for i, part in enumerate(pieces):
            so_far = {**usage, "candidatesTokenCount": max(1, usage["candidatesTokenCount"] * (i + 1) // len(pieces))}
            cand: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
            if i == len(pieces) - 1:
                cand["finishReason"] = "STOP"
                so_far = usage
            chunks.append(
                json.dumps({"candidates": [cand], "usageMetadata": so_far, "modelVersion": model, "responseId": rid})
            )
        if "alt=sse" in self.path:
            self._stream(chunks, crlf=True)
        else:
            self._stream_json(chunks)

    def _stream_json(self, items: list[str]) -> None:
        """Gemini's stream without alt=sse: one JSON array, an element a chunk, `x-test-delay-ms` apart."""
        delay = int(self.headers.get("x-test-delay-ms") or 0) / 1000
        self.send_response(200)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for i, item in enumerate(items):
                if delay and i:
                    time.sleep(delay)
                payload = (("[" if i == 0 else ",\r\n") + item).encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"1\r\n]\r\n0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.server.aborted += 1

    def _stream(self, datas: list[str], names: list[str] | None = None, tail: int = 1, crlf: bool = False) -> None:
        """Send SSE events `x-test-delay-ms` apart; the last `tail` follow the one before at once."""
        delay = int(self.headers.get("x-test-delay-ms") or 0) / 1000
        delayed = range(1, len(datas) - tail)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
        self.end_headers()
        try:
            for i, data in enumerate(datas):
                if getattr(self, "die_after", None) is not None and i >= self.die_after:
                    self.close_connection = True  # cut mid-stream: no last chunk, the socket just closes
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if delay and i in delayed:
                    time.sleep(delay)
                head = f"event: {names[i]}\n" if names and i < len(names) else ""
                payload = (f"{head}data: {data}\r\n\r\n" if crlf else f"{head}data: {data}\n\n").encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.server.aborted += 1


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, *, gzip_json: bool = False) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.requests: list[dict[str, Any]] = []
        self.gzip_json = gzip_json
        self.aborted = 0
        self.set_cookie: str | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, handler: Handler, body: Any) -> None:
        with self._lock:
            self.requests.append(
                {"method": handler.command, "path": handler.path, "headers": dict(handler.headers), "body": body}
            )

    def start(self) -> "UpstreamServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    srv = UpstreamServer(a.port)
    print(f"listening on {srv.url}", flush=True)
    srv.serve_forever()
