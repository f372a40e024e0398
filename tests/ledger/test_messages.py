"""One walker over every request and answer shape: roles, kinds and text, in order."""

from __future__ import annotations

from turnout.ledger.attribution import prompt_parts
from turnout.ledger.messages import answer_parts, request_parts, text_of
from turnout.ledger.request_size import prompt_text


def kinds(parts):
    return [(p.role, p.kind, p.text) for p in parts]


def test_chat_with_images_tool_calls_and_results():
    body = {"messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]}  # fmt: skip
    parts = request_parts(body)
    assert kinds(parts) == [("system", "text", "S"), ("user", "text", "look"), ("user", "image", ""),
                            ("assistant", "tool_call", '{"a":1}'), ("tool", "tool_result", "42")]  # fmt: skip
    assert parts[2].ref == "https://x/y.png" and parts[3].name == "f" and parts[3].ref == parts[4].ref == "c1"
    assert [p.msg for p in parts] == [0, 1, 1, 2, 3]


def test_responses_and_anthropic_shapes():
    responses = {"instructions": "I", "input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                 {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]},
                 {"type": "function_call", "name": "g", "arguments": "{}", "call_id": "k"},
                 {"type": "function_call_output", "call_id": "k", "output": "ok"}]}  # fmt: skip
    assert kinds(request_parts(responses)) == [("system", "text", "I"), ("user", "text", "q"), ("assistant", "thinking", "thought"),
                                               ("assistant", "tool_call", "{}"), ("tool", "tool_result", "ok")]  # fmt: skip
    anthropic = {"system": "S", "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "u"}},
                 {"type": "text", "text": "summarise"}]}]}  # fmt: skip
    assert kinds(request_parts(anthropic)) == [
        ("system", "text", "S"),
        ("user", "file", ""),
        ("user", "text", "summarise"),
    ]
    assert prompt_parts(anthropic) == ("S", "summarise")
    assert prompt_text({"prompt": "once"}) == ("once", 1) and prompt_text({"input": ["a", "b"]}) == ("a\nb", 2)


def test_answers_of_every_api():
    chat = {"choices": [{"message": {"role": "assistant", "content": "hi", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}}]}  # fmt: skip
    assert kinds(answer_parts(chat)) == [("assistant", "text", "hi"), ("assistant", "tool_call", "{}")]
    assert text_of(answer_parts({"choices": [{"text": "done"}]})) == "done"
    resp = {"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]}]}
    assert text_of(answer_parts(resp)) == "A"
    msg = {
        "content": [
            {"type": "thinking", "thinking": "t"},
            {"type": "text", "text": "B"},
            {"type": "tool_use", "name": "w", "input": {"x": 1}},
        ]
    }
    assert kinds(answer_parts(msg)) == [
        ("assistant", "thinking", "t"),
        ("assistant", "text", "B"),
        ("assistant", "tool_call", '{"x": 1}'),
    ]
    assert answer_parts("nope") == [] and request_parts([1, 2]) == []


def test_hostile_nesting_is_bounded():
    deep: object = "x"
    for _ in range(5000):
        deep = [deep]
    assert request_parts({"messages": [{"role": "user", "content": deep}]}) == []
