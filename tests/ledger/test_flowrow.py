"""Row building, pure: an `LLMFlow` and what the client was answered make the ledger row."""

from __future__ import annotations

import json

from turnout.ledger import providers
from turnout.ledger.flowrow import Answer, build_row, flow_comment, flow_mark
from turnout.ledger.flowstate import LLMFlow
from turnout.ledger.pricing import PriceBook
from turnout.ledger.sse import SSEParser

STARTED = 1_800_000_000.0
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
OK = {"id": "c1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}}  # fmt: skip


def flow(stream: bool = False) -> LLMFlow:
    return LLMFlow(
        provider=providers.PROVIDERS["openai"], host="api.openai.com", path="/v1/chat/completions", endpoint="chat",
        body=BODY, body_error=None, request_text=json.dumps(BODY), requested_model="gpt-4o", api_key_fp="fp",
        stream=stream, started=STARTED,
    )  # fmt: skip


def answer(body: bytes, status: int = 200, ctype: str = "application/json", *, cut: bool = False) -> Answer:
    return Answer(status, ctype, lambda: body, streamed=False, ended_at=STARTED + 0.25, cut=cut)


def row(llm: LLMFlow, ans: Answer | None, error: str | None = None, *, store_bodies: bool = True) -> dict:
    return build_row(llm, ans, error, flow_id="f1", method="POST", client_addr="127.0.0.1:5000",
                     store_bodies=store_bodies, prices=PriceBook(), now=STARTED + 1)  # fmt: skip


def test_an_answered_call_is_priced_timed_and_parsed():
    llm = flow()
    llm.columns["feature"] = "search"
    r = row(llm, answer(json.dumps(OK).encode()))
    assert r["status_code"] == 200 and r["error"] is None and r["latency_ms"] == 250.0
    assert (r["prompt_tokens"], r["completion_tokens"], r["total_tokens"]) == (1000, 100, 1100)
    assert r["response_model"] == "gpt-4o-2024-08-06" and r["finish_reason"] == "stop"
    assert r["cost_usd"] > 0 and r["feature"] == "search"
    assert json.loads(r["response_body"]) == OK and llm.response_json == OK  # for the on_record callbacks


def test_bodies_stay_out_when_asked():
    r = row(flow(), answer(json.dumps(OK).encode()), store_bodies=False)
    assert r["request_body"] is None and "response_body" not in r and r["prompt_tokens"] == 1000


def test_failures_are_named():
    r = row(flow(), answer(b'{"error": {"message": "slow down", "type": "rate_limit", "code": "rl"}}', 429))
    assert r["error"] == "HTTP 429: slow down (rate_limit, rl)"
    r = row(flow(), answer(b"<html>portal</html>", 200, "text/html"))
    assert r["error"] == "answer is not JSON (text/html)"
    r = row(flow(), answer(b'{"id": "c1", "choi', 200, cut=True), "peer closed")
    assert r["status_code"] == 502 and "did not arrive whole" in r["error"]  # what the client was really sent
    r = row(flow(), None, "client disconnected")
    assert r["error"] == "client disconnected" and "status_code" not in r and r["latency_ms"] == 1000.0


def test_a_stream_is_recorded_from_its_assembled_copy():
    llm = flow(stream=True)
    asm = llm.recording.assembler = llm.provider.stream_assembler("chat")
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": "par"}}],
    }
    for ev in SSEParser().feed(f"data: {json.dumps(chunk)}\n\n".encode()):
        asm.feed(ev)
    llm.recording.first_byte_at = STARTED + 0.1
    r = row(llm, Answer(200, "text/event-stream", lambda: b"", streamed=True, ended_at=STARTED + 0.5, cut=False))
    assert r["error"] == "stream ended before it finished" and r["ttft_ms"] == 100.0
    assert json.loads(r["response_body"])["choices"][0]["message"]["content"] == "par"


def test_mitmweb_mark_and_comment():
    r = {"requested_model": "gpt-4o", "model": "gpt-4o-mini", "routed": 1, "task": "qa", "prompt_tokens": 5,
         "completion_tokens": 2, "cost_usd": 0.0001, "cache": "miss"}  # fmt: skip
    assert flow_mark(r) == ":twisted_rightwards_arrows:" and flow_mark({**r, "cache": "hit"}) == ":zap:"
    assert flow_comment(r) == "gpt-4o → gpt-4o-mini · qa · 5+2 tok · $0.0001 · cache miss"
