"""The failover translators, property-tested: requests, answers and streams between OpenAI chat, Anthropic
Messages and Gemini never lose text, a tool call or its arguments, in either direction or a round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.ledger.sse import SSEParser
from turnout.ledger.translate import (
    Untranslatable,
    answer_from_hub,
    answer_to_hub,
    request_from_hub,
    request_to_hub,
)
from turnout.ledger.translate_stream import HubToClient, TargetToHub

FORMATS = ("openai", "anthropic", "gemini")
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
names = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True)
json_args = st.dictionaries(names, st.one_of(st.integers(), text, st.booleans()), max_size=3)


@st.composite
def conversations(draw):
    """An OpenAI chat request: system, user turns, assistant tool calls each answered by a tool message."""
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(text)})
    calls_made = 0
    for _ in range(draw(st.integers(1, 3))):
        msgs.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()):
            n = draw(st.integers(1, 2))
            calls = [
                {"id": f"call_{calls_made + i}", "type": "function",
                 "function": {"name": draw(names), "arguments": json.dumps(draw(json_args))}}
                for i in range(n)
            ]  # fmt: skip
            calls_made += n
            msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
            for c in calls:
                msgs.append({"role": "tool", "tool_call_id": c["id"], "content": draw(text)})
            msgs.append({"role": "assistant", "content": draw(text)})
    body = {"model": "gpt-4o", "messages": msgs}
    if draw(st.booleans()):
        body["tools"] = [{"type": "function", "function": {"name": draw(names), "description": "d",
                          "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}]  # fmt: skip
        body["tool_choice"] = draw(st.sampled_from(["auto", "required", "none"]))
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(1, 4096))
    if draw(st.booleans()):
        body["stop"] = [draw(text)]
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    return body


def _facts(hub: dict) -> dict:
    """What must survive any translation: every text said, every tool call and result, the settings."""
    said, calls, results = [], [], []
    for m in hub["messages"]:
        content = m.get("content")
        if isinstance(content, str) and content and m["role"] != "tool":
            said.append((m["role"] if m["role"] != "developer" else "system", content))
        for c in m.get("tool_calls") or ():
            calls.append((c["function"]["name"], json.loads(c["function"]["arguments"] or "{}")))
        if m["role"] == "tool":
            results.append(m["content"])
    return {
        "said": said,
        "calls": calls,
        "results": results,
        "tools": [t["function"]["name"] for t in hub.get("tools") or ()],
        "max_tokens": hub.get("max_tokens"),
        "stop": hub.get("stop"),
        "temperature": hub.get("temperature"),
    }


def _merged(said: list) -> list:
    """Anthropic and Gemini alternate roles, so neighbouring turns of one role become one: compare the text
    each run of a role said, in order."""
    out: list = []
    for role, t in said:
        if out and out[-1][0] == role:
            out[-1] = (role, out[-1][1] + t)
        else:
            out.append((role, t))
    return out


def _result(fmt: str, text: str):
    """A tool result as it comes back: Gemini carries it as an object (`{"content": text}` unless it is one)."""
    if fmt != "gemini":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"content": text}


@settings(max_examples=150, deadline=None)
@given(body=conversations(), fmt=st.sampled_from(["anthropic", "gemini"]))
def test_a_request_survives_the_round_trip(body, fmt):
    sent = request_from_hub(fmt, body, "the-model")
    back = request_to_hub(fmt, json.loads(json.dumps(sent)), model="the-model")
    a, b = _facts(body), _facts(back)
    assert b["calls"] == a["calls"] and b["tools"] == a["tools"]
    assert [_result(fmt, r) for r in b["results"]] == [_result(fmt, r) for r in a["results"]]
    assert _merged(b["said"]) == _merged(a["said"])
    assert b["stop"] == a["stop"] and b["temperature"] == a["temperature"]
    if fmt == "gemini" or a["max_tokens"] is not None:
        assert b["max_tokens"] == a["max_tokens"]


@st.composite
def answers(draw):
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": draw(names), "arguments": json.dumps(draw(json_args))},
        }
        for i in range(draw(st.integers(0, 2)))
    ]
    content = draw(st.one_of(st.none(), text)) if calls else draw(text)
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    usage = {"prompt_tokens": draw(st.integers(0, 999)), "completion_tokens": draw(st.integers(0, 999))}
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(answer=answers(), fmt=st.sampled_from(FORMATS))
def test_an_answer_survives_the_round_trip(answer, fmt):
    client = answer_from_hub(fmt, answer)
    back = answer_to_hub(fmt, json.loads(json.dumps(client)), "m")
    m0, m1 = answer["choices"][0]["message"], back["choices"][0]["message"]
    assert (m1["content"] or "") == (m0["content"] or "")

    def calls(m):
        return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in m.get("tool_calls") or ()]

    assert calls(m1) == calls(m0)
    assert back["choices"][0]["finish_reason"] == answer["choices"][0]["finish_reason"]
    assert back["usage"]["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    assert back["usage"]["completion_tokens"] == answer["usage"]["completion_tokens"]


@st.composite
def hub_streams(draw):
    """Hub chunks: text pieces, or tool calls whose arguments arrive in several deltas."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunk = lambda delta, finish=None: {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # noqa: E731
    chunks = [chunk({"role": "assistant", "content": ""})]
    pieces = draw(st.lists(text, min_size=0, max_size=5))
    chunks += [chunk({"content": p}) for p in pieces]
    calls = []
    for i in range(draw(st.integers(0 if pieces else 1, 2))):
        name, args = draw(names), json.dumps(draw(json_args))
        calls.append((name, json.loads(args)))
        chunks.append(chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))  # fmt: skip
        cuts = sorted(draw(st.sets(st.integers(0, len(args)), max_size=3)) | {0, len(args)})
        for a, b in zip(cuts, cuts[1:]):
            chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": args[a:b]}}]}))
    finish = "tool_calls" if calls else "stop"
    chunks.append(chunk({}, finish))
    usage = {
        **base,
        "choices": [],
        "usage": {"prompt_tokens": draw(st.integers(0, 99)), "completion_tokens": draw(st.integers(0, 99))},
    }
    return chunks, usage, "".join(pieces), calls, finish


@settings(max_examples=150, deadline=None)
@given(stream=hub_streams(), fmt=st.sampled_from(FORMATS), split=st.integers(1, 97))
def test_a_stream_survives_the_round_trip_event_by_event(stream, fmt, split):
    chunks, usage, text_said, calls, finish = stream
    to_client = HubToClient(fmt, include_usage=True)
    wire = b"".join(to_client.feed(c) for c in chunks)
    to_client.feed(usage)
    wire += to_client.end()
    back = TargetToHub(fmt, "m")
    parser = SSEParser()
    got = []
    for i in range(0, len(wire), split):  # any TCP chunking
        for ev in parser.feed(wire[i : i + split]):
            got += back.feed(ev)
    for ev in parser.close():
        got += back.feed(ev)
    assert back.done and back.error is None
    said = "".join(c["choices"][0]["delta"].get("content") or "" for c in got if c.get("choices"))
    assert said == text_said
    args: dict[int, list] = {}
    for c in got:
        for tc in (c.get("choices") or [{}])[0].get("delta", {}).get("tool_calls") or ():
            slot = args.setdefault(tc["index"], [None, ""])
            slot[0] = tc.get("function", {}).get("name") or slot[0]
            slot[1] += tc.get("function", {}).get("arguments") or ""
    assert [(n, json.loads(a or "{}")) for n, a in (args[k] for k in sorted(args))] == calls
    finishes = [
        c["choices"][0]["finish_reason"] for c in got if c.get("choices") and c["choices"][0].get("finish_reason")
    ]
    assert finishes == [finish]
    assert back.usage["prompt_tokens"] == usage["usage"]["prompt_tokens"]
    assert back.usage["completion_tokens"] == usage["usage"]["completion_tokens"]


def test_what_cannot_be_said_faithfully_is_refused():
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(Untranslatable, match="n > 1"):
        request_from_hub("anthropic", {**chat, "n": 2}, "claude")
    with pytest.raises(Untranslatable, match="JSON mode"):
        request_from_hub("anthropic", {**chat, "response_format": {"type": "json_object"}}, "claude")
    with pytest.raises(Untranslatable, match="temperature"):
        request_from_hub("anthropic", {**chat, "temperature": 1.5}, "claude")
    with pytest.raises(Untranslatable, match="built-in tool"):
        request_from_hub("gemini", {**chat, "tools": [{"type": "web_search"}]}, "g")
    signed = {"model": "claude", "max_tokens": 5, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "…", "signature": "sig"}, {"type": "text", "text": "a"}]},
    ]}  # fmt: skip
    with pytest.raises(Untranslatable, match="signed thinking"):
        request_to_hub("anthropic", signed)
    with pytest.raises(Untranslatable, match="server"):
        request_to_hub(
            "anthropic",
            {
                "model": "c",
                "max_tokens": 5,
                "messages": [],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
        )
    with pytest.raises(Untranslatable, match="server-side"):
        request_to_hub("gemini", {"contents": [], "tools": [{"googleSearch": {}}]}, model="g")


def test_json_mode_and_images_reach_gemini():
    body = {"model": "gpt-4o", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}  # fmt: skip
    g = request_from_hub("gemini", body, "gemini-2.5-flash")
    assert g["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}
    assert g["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    a = request_from_hub("anthropic", {**body, "response_format": None}, "claude")
    assert a["messages"][0]["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "iVBORw0KGgo=",
    }


def test_review_regressions():
    # two calls of one function, answered in order: each result keeps its own call
    g = {"contents": [
        {"role": "user", "parts": [{"text": "weather in two cities"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "wx", "args": {"c": "A"}}}, {"functionCall": {"name": "wx", "args": {"c": "B"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "wx", "response": {"t": 1}}}, {"functionResponse": {"name": "wx", "response": {"t": 2}}}]},
    ]}  # fmt: skip
    hub = request_to_hub("gemini", g, model="gemini-2.5-flash")
    ids = [c["id"] for c in hub["messages"][1]["tool_calls"]]
    assert [m["tool_call_id"] for m in hub["messages"][2:]] == ids and len(set(ids)) == 2
    # a prompt Gemini blocked is a content filter, not a clean stop
    blocked = answer_to_hub("gemini", {"promptFeedback": {"blockReason": "SAFETY"}}, "g")
    assert blocked["choices"][0]["finish_reason"] == "content_filter"
    # a tool call cut off at the output limit still reaches the client
    cut = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": "unfinish'}}]},
        "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}  # fmt: skip
    assert answer_from_hub("anthropic", cut)["content"][0]["input"] == {}
    # thinking switched off is no Gemini-only feature
    off = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}},
    }
    assert request_to_hub("gemini", off, model="g")["messages"] == [{"role": "user", "content": "x"}]
    with pytest.raises(Untranslatable):
        request_to_hub("gemini", {**off, "generationConfig": {"thinkingConfig": {"thinkingBudget": -1}}}, model="g")


def test_gemini_system_instruction_is_the_system_prompt():
    from turnout.ledger.messages import request_parts

    body = {"systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}]}, "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}  # fmt: skip
    assert [(p.role, p.text) for p in request_parts(body)] == [("system", "Be brief."), ("user", "hi")]
