"""A flow's ledger row, built from its `LLMFlow` and what the client was answered — no proxy.

`addons/record.py` hands in the answer as an `Answer` (what mitmproxy's response said) and writes
the row this returns; a bug here costs columns, never the row (`bare_row` is the fallback).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .flowstate import LLMFlow
from .pricing import PriceBook, Usage
from .sse import stream_parser
from .store import iso_utc


@dataclass(frozen=True)
class Answer:
    """The response the client got, as far as the row needs it."""

    status_code: int
    content_type: str
    content: Callable[[], bytes]  # the whole body (read only when the answer was not streamed)
    streamed: bool  # passed through as it arrived (mitmproxy's `response.stream`)
    ended_at: float | None  # when its last byte went out
    cut: bool  # the upstream's body did not arrive whole (mitmproxy recorded an error on the flow)


def error_text(status: int, body: Any, raw: bytes) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        parts = [str(err.get(k)) for k in ("type", "status", "code") if err.get(k)]
        return f"HTTP {status}: {err.get('message') or ''} ({', '.join(parts)})"[:500]
    return f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"


def bare_row(
    llm: LLMFlow, *, flow_id: str, method: str, client_addr: str | None, error: str | None, store_bodies: bool
) -> dict[str, Any]:
    """The columns known before any answer: what was asked, by whom, and what the addons decided."""
    body = llm.body
    return {
        "id": flow_id,
        "started_at": iso_utc(llm.started),
        "provider": llm.provider.name,
        "endpoint": llm.endpoint,
        "host": llm.host,
        "method": method,
        "path": llm.path,
        "requested_model": llm.requested_model,
        "model": llm.model,
        "stream": int(llm.stream),
        "api_key_fp": llm.api_key_fp,
        "user": body.get("user") if isinstance(body, dict) and isinstance(body.get("user"), str) else None,
        "client_addr": client_addr,
        "error": error,
        "request_body": llm.request_text if store_bodies else None,
        **llm.columns,
    }


def build_row(
    llm: LLMFlow,
    answer: Answer | None,
    error: str | None,
    *,
    flow_id: str,
    method: str,
    client_addr: str | None,
    store_bodies: bool,
    prices: PriceBook,
    counted: Usage | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The flow's row. `counted` is turnout's own count for a stream the provider reported no usage for."""
    row = bare_row(llm, flow_id=flow_id, method=method, client_addr=client_addr, error=error, store_bodies=store_bodies)
    now = time.time() if now is None else now
    rec = llm.recording
    asm = rec.assembler
    body: Any = None
    usage: Usage | None = None
    response_text: str | None = None
    if answer is not None:
        row["status_code"] = answer.status_code
        if asm is not None:  # streamed: the assembled answer is the record
            body, usage = asm.result(), asm.usage
            response_text = json.dumps(body, ensure_ascii=False) if body is not None else None
            if counted is not None:
                usage = counted
                row["usage_estimated"] = 1
            if asm.error and not error:
                error = f"stream error: {asm.error}"
            if not asm.done and not error:
                error = "stream ended before it finished"
        else:
            raw = answer.content() or b""
            framing = llm.provider.stream_framing(llm.endpoint or "chat")
            if answer.content_type.startswith("text/event-stream") or (
                llm.stream and framing == "json-array" and answer.status_code == 200
            ):
                # a whole stream body (e.g. a cache hit rebuilt as a stream): record the assembled answer
                whole = llm.provider.stream_assembler(llm.endpoint or "chat")
                parser = stream_parser(framing)
                for ev in parser.feed(raw) + parser.close():
                    whole.feed(ev)
                body, usage = whole.result(), whole.usage
                response_text = json.dumps(body, ensure_ascii=False) if body is not None else None
            else:
                response_text = raw.decode("utf-8", "replace")
                try:
                    body = json.loads(raw) if raw else None
                except (ValueError, RecursionError):
                    body = None
                    if llm.endpoint and 200 <= answer.status_code < 300 and not error:
                        # a 2xx that is not the provider's JSON (a portal's HTML, a truncated proxy answer)
                        error = f"answer is not JSON ({answer.content_type or 'no content-type'})"
                if llm.endpoint:
                    usage = llm.provider.response_usage(llm.endpoint, body)
        if answer.status_code >= 400 and not error:
            error = error_text(answer.status_code, body, (response_text or "").encode())
        if error and asm is None and not llm.served_locally and not answer.streamed and answer.cut:
            # The upstream's headers came but its body did not finish: mitmproxy answers the client with
            # its own 502 instead (a non-streamed answer leaves only once whole). Record what the client got.
            row["status_code"] = 502
            error = f"upstream answered {answer.status_code} but the body did not arrive whole: {error}"
        llm.response_json = body
        row["response_model"] = llm.provider.response_model(body)
        row["finish_reason"] = llm.provider.finish_reason(llm.endpoint, body) if llm.endpoint else None
        end = rec.stream_ended_at or answer.ended_at or now
    else:
        end = now
        if asm is not None:
            partial = asm.result()
            usage = asm.usage
            response_text = json.dumps(partial, ensure_ascii=False) if partial is not None else None
    if error is None and llm.body_error and llm.endpoint:
        error = llm.body_error
    if llm.gateway_error:  # no provider answer, as when mitmproxy's own leg fails: no status, why
        row["status_code"] = None
        error = llm.gateway_error
    row["error"] = error
    row["ended_at"] = iso_utc(end)
    row["latency_ms"] = round((end - llm.started) * 1000, 3)
    if rec.first_byte_at is not None:
        row["ttft_ms"] = round((rec.first_byte_at - llm.started) * 1000, 3)
    if usage is not None:
        row.update(usage._asdict())
        row["total_tokens"] = usage.prompt_tokens + usage.completion_tokens
        priced_model = row.get("response_model") or llm.model
        row["cost_usd"] = prices.cost(llm.answered_by or llm.provider.name, priced_model, usage)
    if store_bodies:
        row["response_body"] = response_text
    row.update(llm.columns)
    return row


def flow_mark(row: dict[str, Any]) -> str:
    """mitmweb's flow mark (an emoji shortcode): blocked ⛔, served from cache ⚡, routed 🔀, failed over ↩️;
    "" for none."""
    if row.get("blocked_by"):
        return ":no_entry:"
    if row.get("cache") == "hit":
        return ":zap:"
    if row.get("routed"):
        return ":twisted_rightwards_arrows:"
    if row.get("failover_from"):
        return ":leftwards_arrow_with_hook:"
    return ""


def flow_comment(row: dict[str, Any]) -> str:
    """`gpt-4o → gpt-4o-mini · summarization · 812+95 tok · $0.0004 · cache miss` for mitmweb."""
    parts = []
    req, sent = row.get("requested_model"), row.get("model")
    if req and sent and req != sent:
        parts.append(f"{req} → {sent}")
    elif row.get("would_route_to"):
        parts.append(f"{req} (→ {row['would_route_to']}?)")
    elif req:
        parts.append(str(req))
    if row.get("task"):
        parts.append(str(row["task"]))
    if row.get("prompt_tokens") is not None:
        parts.append(f"{row['prompt_tokens']}+{row.get('completion_tokens') or 0} tok")
    if row.get("cost_usd") is not None:
        parts.append(f"${row['cost_usd']:.4f}")
    if row.get("cache"):
        parts.append(f"cache {row['cache']}")
    if row.get("blocked_by"):
        parts.append(f"blocked: {row['blocked_by']}")
    if row.get("failover_from"):
        parts.append(
            f"failed over from {row['failover_from']} ({row.get('failover_reason') or '?'}) to {row.get('provider')}"
        )
    if row.get("error"):
        parts.append(str(row["error"])[:80])
    return " · ".join(parts)
