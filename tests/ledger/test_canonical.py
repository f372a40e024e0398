from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from turnout.ledger.cache import CacheIndex, CacheLimits
from turnout.ledger.canonical import (
    canonical_json,
    canonical_request,
    first_difference,
    loosen,
    loosen_text,
    request_key,
)


def key(body, model=None, scope="key:a", endpoint="chat"):
    return request_key(canonical_json(canonical_request(endpoint, body, model or body.get("model"))), scope)


BASE = {
    "model": "gpt-4o",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
}


def test_same_request_same_key_regardless_of_json_form():
    text = json.dumps(BASE)
    reordered = json.loads(json.dumps({"messages": BASE["messages"], "model": "gpt-4o"}, indent=3))
    assert key(json.loads(text)) == key(reordered)
    assert key(
        {**BASE, "user": "u1", "metadata": {"a": "b"}, "stream": True, "stream_options": {"include_usage": True}}
    ) == key(BASE)
    assert key({**BASE, "temperature": 1.0}) == key({**BASE, "temperature": 1}) == key(BASE)
    parts = {
        **BASE,
        "messages": [BASE["messages"][0], {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}],
    }
    assert key(parts) == key(BASE)
    assert key({**BASE, "messages": [*BASE["messages"][:1], {**BASE["messages"][1], "name": None}]}) == key(BASE)


def test_anything_that_changes_the_answer_changes_the_key():
    k = key(BASE)
    assert key({**BASE, "temperature": 0}) != k
    assert key({**BASE, "temperature": 0.7}) != key({**BASE, "temperature": 0.8})
    assert key(BASE, model="gpt-4o-mini") != k  # the model actually sent upstream
    assert key({**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "What is 2+3?"}]}) != k
    assert key({**BASE, "messages": BASE["messages"][1:]}) != k
    assert key({**BASE, "tools": [{"type": "function", "function": {"name": "f"}}]}) != k
    assert key({**BASE, "response_format": {"type": "json_object"}}) != k
    assert key({**BASE, "max_tokens": 5}) != k
    assert key({**BASE, "n": 2}) != k
    assert key({**BASE, "logprobs": True}) != k
    assert key(BASE, scope="key:b") != k
    assert key(BASE, endpoint="responses") != k


@given(
    st.dictionaries(
        st.sampled_from(["model", "messages", "temperature", "seed", "user", "tools", "n"]),
        st.integers() | st.text(max_size=5) | st.none(),
        max_size=6,
    )
)
def test_canonical_form_is_stable_and_total(body):
    c1 = canonical_json(canonical_request("chat", body, None))
    c2 = canonical_json(canonical_request("chat", json.loads(json.dumps(body)), None))
    assert c1 == c2


def test_fuzzy_matching_ignores_prose_form_but_not_numbers_words_or_code():
    assert loosen_text("What is the capital of France?") == loosen_text("what is  the capital of france")
    assert loosen_text("Pay $3.50 now.") != loosen_text("Pay $3.60 now.")
    assert loosen_text("Pay 3.50") == loosen_text("pay 3.50!")
    assert loosen_text("Call `Foo.bar()` now") != loosen_text("Call `foo.bar()` now")
    assert loosen_text("Hi Alice") != loosen_text("Hi Alicia")
    a = loosen(canonical_request("chat", {**BASE, "messages": [{"role": "user", "content": "Hello, World!"}]}, None))
    b = loosen(canonical_request("chat", {**BASE, "messages": [{"role": "user", "content": "hello world"}]}, None))
    assert a == b


def test_first_difference_names_the_field():
    a = canonical_request("chat", BASE, None)
    b = canonical_request(
        "chat", {**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "changed"}]}, None
    )
    assert first_difference(a, b) == ("messages[1].content", "What is 2+2?", "changed")
    assert first_difference(a, a) is None


def test_index_lru_ttl_and_bytes():
    idx = CacheIndex(CacheLimits(ttl=10, max_entries=2, max_bytes=100))
    assert idx.add("a", 10, 0) == []
    assert idx.add("b", 10, 1) == []
    assert idx.lookup("a", 2)[0] is not None  # a is now most recent
    assert idx.add("c", 10, 3) == ["b"]
    assert idx.lookup("a", 20) == (None, True)  # expired
    assert idx.add("big", 95, 21) == ["c"]
    assert idx.total_bytes == 95 and len(idx) == 1
