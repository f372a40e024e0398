"""Usage the provider did not report (a cut stream, a server without usage): counted from what passed."""

from __future__ import annotations

import json

from turnout.ledger.estimate import output_text, unreported_usage
from turnout.ledger.pricing import Usage
from turnout.ledger.providers import anthropic as an
from turnout.ledger.providers import openai as oa
from turnout.ledger.sse import SSEEvent
from turnout.router.tokens import count_tokens

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Write a haiku about proxies."}]}


def feed(assembler, events: list[dict]) -> None:
    for e in events:
        assembler.feed(SSEEvent(e.get("type"), json.dumps(e)))


def test_output_text_takes_generated_text_only():
    chat = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": None,
            "message": {"role": "assistant", "content": "Packets pass", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}}]}  # fmt: skip
    assert output_text(chat) == 'Packets pass\n{"a": 1}'
    completions = {"choices": [{"index": 0, "text": "old style"}]}
    assert output_text(completions) == "old style"
    claude = {"type": "message", "role": "assistant", "model": "claude-haiku-4-5", "usage": {"input_tokens": 9},
              "content": [{"type": "thinking", "thinking": "hmm", "signature": "c2ln"}, {"type": "text", "text": "Yo"},
                          {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}}]}  # fmt: skip
    assert output_text(claude) == 'hmm\nYo\n{"city": "Paris"}'
    assert output_text(None) == "" and output_text({"weird": [1, {"content": 2}]}) == ""


def test_unreported_usage_counts_prompt_and_output_in_the_models_encoding():
    u = unreported_usage(None, {"choices": [{"message": {"content": "Quiet relay hums"}}]}, BODY, "gpt-4o")
    assert u == Usage(prompt_tokens=count_tokens("Write a haiku about proxies.", "gpt-4o") + 4 + 3,
                      completion_tokens=count_tokens("Quiet relay hums", "gpt-4o"))  # fmt: skip
    assert unreported_usage(None, {}, BODY, "gpt-4o", prompt_tokens=1234).prompt_tokens == 1234  # Budget's count reused


def test_the_providers_own_numbers_win_where_it_sent_them():
    started = Usage(prompt_tokens=812, cached_prompt_tokens=800, completion_tokens=1)  # Anthropic's message_start
    u = unreported_usage(
        started, {"content": [{"type": "text", "text": "one two three four"}]}, BODY, "claude-sonnet-4-5"
    )
    assert u.prompt_tokens == 812 and u.cached_prompt_tokens == 800
    assert u.completion_tokens == count_tokens("one two three four", "claude-sonnet-4-5") > 1


def test_anthropic_usage_is_final_only_after_message_delta():
    s = an.MessagesStream()
    feed(s, [{"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [],
              "usage": {"input_tokens": 20, "output_tokens": 1}}},
             {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial answer"}}])  # fmt: skip
    assert s.usage is not None and s.usage.prompt_tokens == 20 and not s.usage_final
    assert output_text(s.result()) == "partial answer"
    feed(s, [{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}])
    assert s.usage_final and s.usage.completion_tokens == 3


def test_chat_usage_is_final_with_the_usage_chunk():
    s = oa.ChatStream()
    feed(
        s,
        [
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": "Hi"}}],
            }
        ],
    )
    assert not s.usage_final and output_text(s.result()) == "Hi"
    feed(
        s,
        [
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            }
        ],
    )
    assert s.usage_final


def test_a_cut_responses_stream_keeps_the_text_its_deltas_carried():
    s = oa.ResponsesStream()
    feed(s, [{"type": "response.created", "response": {"id": "r", "object": "response", "status": "in_progress", "output": [], "usage": None}},
             {"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "summary": []}},
             {"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "Think "},
             {"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "first."},
             {"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "name": "f", "arguments": ""}},
             {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": '{"q": '},
             {"type": "response.output_item.added", "output_index": 2, "item": {"type": "message", "role": "assistant", "content": []}},
             {"type": "response.output_text.delta", "output_index": 2, "delta": "Hello "},
             {"type": "response.output_text.delta", "output_index": 2, "delta": "wor"}])  # fmt: skip
    assert not s.usage_final
    assert output_text(s.result()) == 'Think first.\n{"q": \nHello wor'
    done = {"id": "r", "object": "response", "status": "completed", "output": [{"type": "message", "content": [
        {"type": "output_text", "text": "Hello world"}]}], "usage": {"input_tokens": 3, "output_tokens": 2}}  # fmt: skip
    feed(s, [{"type": "response.completed", "response": done}])
    assert s.usage_final and s.result() == done  # a finished stream is the provider's own object


def test_reasoning_streamed_as_reasoning_content_is_kept_and_counted():
    s = oa.ChatStream()
    feed(s, [{"id": "c", "object": "chat.completion.chunk", "model": "deepseek-reasoner", "choices": [{"index": 0, "delta": {"reasoning_content": "First, "}}]},
             {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"reasoning_content": "think."}}]},
             {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "42"}}]}])  # fmt: skip
    message = s.result()["choices"][0]["message"]
    assert message["reasoning_content"] == "First, think." and message["content"] == "42"
    assert output_text(s.result()) == "42\nFirst, think."
