"""Property tests: the request/response parsers never raise and never depend on how bytes were chunked."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.ledger.providers import anthropic as an
from turnout.ledger.providers import openai as oa
from turnout.ledger.sse import SSEEvent, SSEParser, encode_event, split_complete

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20,
)


def _events(datas: list[str]) -> bytes:
    return b"".join(encode_event(d) for d in datas)


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30),
        max_size=10,
    ),
    st.data(),
)
def test_sse_parser_is_chunking_independent(datas, data):
    raw = _events(datas)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    parser = SSEParser()
    got = []
    prev = 0
    for cut in cuts + [len(raw)]:
        got += parser.feed(raw[prev:cut])
        prev = cut
    got += parser.close()
    assert [e.data for e in got] == datas


@given(st.binary(max_size=300))
def test_sse_parser_never_raises_on_garbage(raw):
    p = SSEParser()
    p.feed(raw)
    p.close()
    blocks, rest = split_complete(raw)
    assert b"".join(blocks) + rest == raw


@given(json_values)
@settings(max_examples=300)
def test_provider_parsers_never_raise(value):
    for endpoint in ("chat", "responses", "embeddings", "completions"):
        oa.request_model(endpoint, value)
        oa.wants_stream(endpoint, value)
        oa.response_usage(endpoint, value)
        oa.finish_reason(endpoint, value)
        if isinstance(value, dict):
            oa.ensure_stream_usage(endpoint, dict(value))
    oa.response_model(value)
    for provider, endpoint in (*((oa, e) for e in ("chat", "responses", "completions")), (an, "messages")):
        asm = provider.stream_assembler(endpoint)
        asm.feed(SSEEvent(None, json.dumps(value)))
        asm.feed(SSEEvent("x", "not json"))
        asm.result()
        asm.usage
    an.response_usage("messages", value)
    an.finish_reason("messages", value)
    an.request_model("messages", value)


def test_anthropic_stream_round_trips_through_replay():
    recorded = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "content": [
            {"type": "text", "text": "Let me check the weather."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 12,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 2,
        },
    }
    asm = an.stream_assembler("messages")
    parser = SSEParser()
    for ev in parser.feed(an.replay_stream("messages", recorded)) + parser.close():
        asm.feed(ev)
    assert asm.done and asm.result() == recorded
    assert asm.usage == an.Usage(prompt_tokens=16, cached_prompt_tokens=4, completion_tokens=12, cache_write_tokens=2)


def test_chat_stream_assembles_content_and_tool_calls():
    asm = oa.stream_assembler("chat")
    chunks = [
        {
            "id": "c1",
            "created": 1,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        },
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a"'},
                            }
                        ]
                    },
                }
            ],
        },
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ],
        },
        {
            "id": "c1",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 1}},
        },
    ]
    for c in chunks:
        asm.feed(SSEEvent(None, json.dumps(c)))
    asm.feed(SSEEvent(None, "[DONE]"))
    out = asm.result()
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Hello"
    assert msg["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert asm.usage == oa.Usage(prompt_tokens=3, cached_prompt_tokens=1, completion_tokens=4, reasoning_tokens=0)
    assert asm.done


def test_ensure_stream_usage_only_when_missing():
    body = {"stream": True, "messages": []}
    assert oa.ensure_stream_usage("chat", body) and body["stream_options"] == {"include_usage": True}
    assert not oa.ensure_stream_usage("chat", body)
    assert not oa.ensure_stream_usage("chat", {"stream": False})
    assert not oa.ensure_stream_usage("responses", {"stream": True})
    keep = {"stream": True, "stream_options": {"include_obfuscation": False}}
    assert oa.ensure_stream_usage("chat", keep) and keep["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }


def test_every_provider_module_implements_the_whole_interface():
    """Each provider module defines every member the Provider protocol declares (no getattr fallbacks)."""
    from turnout.ledger.providers import PROVIDERS
    from turnout.ledger.providers.base import Provider

    members = {n for n in vars(Provider) if not n.startswith("_")} | set(Provider.__annotations__)
    for name, module in PROVIDERS.items():
        missing = sorted(m for m in members if not hasattr(module, m))
        assert not missing, f"{name} lacks {missing}"
