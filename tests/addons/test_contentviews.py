"""turnout's mitmproxy content views: chosen only on LLM paths, rendering conversations and SSE answers."""

from __future__ import annotations

import json

import pytest
from mitmproxy import contentviews
from mitmproxy.test import taddons, tflow

from turnout.addons.contentviews import ContentViews, render_request


@pytest.fixture
def views():
    with taddons.context(ContentViews()):
        yield


def _flow(path: str, body: dict, ctype: str = "application/json"):
    f = tflow.tflow(resp=True)
    f.request.path = path
    f.request.headers["content-type"] = ctype
    f.request.content = json.dumps(body).encode()
    return f


def test_responses_request_with_tools_and_function_calls(views) -> None:
    f = _flow("/v1/responses", {
        "model": "gpt-4.1", "instructions": "Be kind.", "tools": [{"type": "function", "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Find cats"}]},
                  {"type": "function_call", "name": "lookup", "arguments": json.dumps({"q": "cats"}, separators=(",", ":")), "call_id": "c1"},
                  {"type": "function_call_output", "call_id": "c1", "output": "3 cats"}],
    })  # fmt: skip
    r = contentviews.prettify_message(f.request, f)
    assert r.view_name == "LLM Conversation"
    assert "── instructions ──\nBe kind." in r.text and "lookup(q?: string)" in r.text
    assert "── user ──\nFind cats" in r.text and '→ tool call lookup({"q":"cats"})  [c1]' in r.text
    assert "── tool result [c1] ──\n3 cats" in r.text


def test_sse_answer_assembled_then_events(views) -> None:
    f = _flow("/v1/responses", {"model": "gpt-4.1", "input": "hi", "stream": True})
    f.response.headers["content-type"] = "text/event-stream"
    done = {"type": "response.completed", "response": {"model": "gpt-4.1", "output": [{"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there"}]}], "usage": {"input_tokens": 3, "output_tokens": 2}}}  # fmt: skip
    f.response.content = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hello there"}\n\n'
        + b"event: response.completed\ndata: "
        + json.dumps(done).encode()
        + b"\n\n"
    )
    r = contentviews.prettify_message(f.response, f)
    assert r.view_name == "LLM Stream"
    assert r.text.index("Hello there") < r.text.index("── 2 events ──")
    assert "usage: 3 prompt + 2 completion tokens" in r.text and "response.completed" in r.text


def test_other_paths_keep_the_json_view(views) -> None:
    f = _flow("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})
    assert contentviews.prettify_message(f.request, f).view_name == "JSON"
    f = _flow("/api/things", {"messages": []})
    assert contentviews.prettify_message(f.request, f).view_name == "JSON"


def test_completions_prompt_and_prefixed_path(views) -> None:
    f = _flow("/openai/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon", "max_tokens": 5})
    r = contentviews.prettify_message(f.request, f)
    assert r.view_name == "LLM Conversation" and "max_tokens=5" in r.text and "── prompt ──\nOnce upon" in r.text
    assert render_request("chat", {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url",
                          "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}).count("[image: data:image/png")  # fmt: skip


def test_event_lines_show_what_changed() -> None:
    from turnout.addons.contentviews import event_summary

    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": " Paris"}}]}
    assert event_summary(None, json.dumps(chunk)) == 'content=" Paris"'
    tool = {
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{"}}]}}]
    }
    assert event_summary(None, json.dumps(tool)) == 'tool_call[0] name=f args+="{"'
    assert (
        event_summary(None, json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}))
        == "usage 3+4 tok"
    )
    assert event_summary(None, "[DONE]") == "[DONE]"
    assert event_summary(
        "response.output_text.delta", json.dumps({"type": "response.output_text.delta", "delta": "Hi"})
    ) == ('response.output_text.delta "Hi"')


def test_anthropic_messages_request_and_stream(views) -> None:
    f = _flow("/v1/messages", {
        "model": "claude-sonnet-4-5", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "use the tool", "signature": "s"},
                                              {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": [{"type": "text", "text": "4°C"}]}]},
        ],
    })  # fmt: skip
    r = contentviews.prettify_message(f.request, f)
    assert r.view_name == "LLM Conversation"
    assert "── system ──\nBe brief." in r.text and "── user ──\nWeather in Oslo?" in r.text
    assert "[thinking] use the tool" in r.text and '→ tool call weather({"city": "Oslo"})  [tu1]' in r.text
    assert "── tool result [tu1] ──\n4°C" in r.text
    f.response.headers["content-type"] = "text/event-stream"
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                                                                "content": [], "usage": {"input_tokens": 30, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "4°C, cloudy."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    f.response.content = b"".join(f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in events)
    r = contentviews.prettify_message(f.response, f)
    assert r.view_name == "LLM Stream" and "(the stream did not finish)" not in r.text
    assert "── assistant ──\n4°C, cloudy." in r.text and "(finish: end_turn)" in r.text
    assert 'content_block_delta text="4°C, cloudy."' in r.text
