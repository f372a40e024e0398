"""Feature extraction: shapes of OpenAI bodies, determinism, never raising."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import example, given, settings
from hypothesis import strategies as st

from turnout.router import tokens
from turnout.router import features
from turnout.router.features import (
    extract_features,
    hashed_char_ngrams,
    hashed_word_ngram_set,
    hashed_word_ngrams,
    words_of,
)
from turnout.router.policy import RoutingPolicy


def chat(content, **extra):
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra}


def test_chat_counts_roles_and_system():
    f = extract_features(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "max_tokens": 50,
        }
    )
    assert f.api == "chat" and f.model == "gpt-4o"
    assert f.n_messages == 4 and dict(f.roles) == {"system": 1, "user": 2, "assistant": 1}
    assert f.has_system and f.system_chars == len("You are terse.")
    assert f.conversation_depth == 2 and f.n_assistant_turns == 1
    assert f.user_text == "what is the capital of france?"
    assert f.max_tokens == 50 and f.n_question_words >= 1 and f.n_question_marks == 1
    assert f.language == "en"
    assert f.user_tokens == tokens.count_tokens("What is the capital of France?")  # the last user message


def test_parts_images_files_audio_tools_schema():
    f = extract_features(
        chat(
            [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:..."}},
                {"type": "file", "file": {"file_id": "f"}},
                {"type": "input_audio", "input_audio": {"data": "..."}},
            ],
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice="auto",
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            reasoning_effort="low",
            prediction={"type": "content", "content": "x"},
        )
    )
    assert f.has_images and f.has_files and f.has_audio and f.has_tools and f.n_tools == 1
    assert f.has_json_schema and f.response_format == "json_schema" and f.tool_choice == "auto"
    assert {"images", "files", "audio", "tools", "json_schema", "reasoning_effort", "prediction"} <= f.uses
    assert f.user_text == "describe"


def test_responses_api_and_legacy_prompt():
    f = extract_features(
        {
            "model": "gpt-4.1",
            "instructions": "Be brief.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Summarize this."}]}],
            "text": {"format": {"type": "json_schema"}},
            "reasoning": {"effort": "high"},
            "previous_response_id": "resp_1",
        }
    )
    assert f.api == "responses" and f.has_system and f.user_text == "summarize this."
    assert {"json_schema", "reasoning_effort", "previous_response"} <= f.uses
    g = extract_features({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"})
    assert g.api == "completions" and g.user_text == "once upon a time"
    h = extract_features({"model": "gpt-4o", "input": "plain string"})
    assert h.api == "responses" and h.user_text == "plain string"


def test_code_math_choices_language():
    f = extract_features(chat("Fix this:\n```python\ndef f(x):\n    return x+1\n```"))
    assert f.n_code_blocks == 1 and f.n_code_lines >= 1
    m = extract_features(chat("Solve $x^2 + 3x = 10$ for x, then compute 12 * 7 = ?"))
    assert m.has_latex and m.n_numbers >= 4 and m.n_math_symbols >= 2
    q = extract_features(chat("Which is a mammal?\nA. shark\nB. whale\nC. trout\nD. squid\nAnswer:"))
    assert q.n_choices == 4
    assert (
        extract_features(chat("¿Dónde está la biblioteca? Necesito un libro para la clase de historia.")).language
        == "es"
    )
    assert extract_features(chat("请把这段话翻译成英文，谢谢你的帮助")).language == "zh"
    assert extract_features(chat("Привет, как дела? Расскажи мне о погоде")).language == "ru"


def test_long_prompt_is_bounded_and_close():
    text = "The committee reviewed the proposal and asked for changes. " * 400
    f = extract_features(chat(text))
    exact = tokens.count_tokens(text)
    assert abs(f.user_tokens - exact) / exact < 0.1
    assert len(f.user_text) <= 2001


def test_hashing_is_stable_across_processes():
    words = words_of("The quick brown fox, again: the quick brown fox!")
    here = sorted(hashed_word_ngram_set(words, 1 << 16))
    assert sorted(hashed_word_ngrams(words, 1 << 16)) == here
    code = (
        "from turnout.router.features import hashed_word_ngram_set, words_of;"
        "print(sorted(hashed_word_ngram_set(words_of('The quick brown fox, again: the quick brown fox!'), 1 << 16)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert other.stdout.strip() == str(here)
    assert hashed_char_ngrams("abc abd", 1024) == hashed_char_ngrams("abc abd", 1024)
    assert all(0 <= b < 1024 for b in hashed_char_ngrams("hello wörld", 1024))


def test_tokens_module():
    assert tokens.ENCODING_NAME in (tokens.OFFLINE_ENCODING, tokens.APPROX_ENCODING)
    assert tokens.count_tokens("") == 0
    assert tokens.count_tokens("hello world") >= 2
    assert tokens.estimate_tokens("abc " * 10, exact_chars=8) > 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
KEYS = [
    "model",
    "messages",
    "input",
    "instructions",
    "prompt",
    "tools",
    "tool_choice",
    "response_format",
    "max_tokens",
    "modalities",
    "audio",
    "reasoning",
    "reasoning_effort",
    "text",
    "prediction",
    "functions",
]
message = st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "type", "text"]), json_values, max_size=4)
bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6),
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["gpt-4o", "gpt-4o-2024-08-06", "o3", "unknown", ""]),
            "messages": st.lists(st.one_of(message, json_values), max_size=4),
        },
        optional={"input": json_values, "tools": json_values, "response_format": json_values},
    ),
)

_POLICY = RoutingPolicy.from_config(None)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_arbitrary_json_never_raises(body):
    f = extract_features(body)
    assert extract_features(body) == f  # deterministic
    d = _POLICY.decide(body)
    assert d.decision in ("route", "keep", "skip")
    assert not d.reason.startswith("router error"), d.reason


def test_tokens_fallback_without_tiktoken():
    code = (
        "import sys; sys.modules['tiktoken'] = None\n"
        "from turnout.router.tokens import ENCODING_NAME, count_tokens\n"
        "print(ENCODING_NAME, count_tokens('abcdefgh'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["approx-chars/4", "2"]


# -- the request-path counters give exactly what their regexes define ------------------------

_PIECES = st.sampled_from(
    list("abcXYZ019 \t\n.,;{}()=+*/^<>$\\_-:?!")
    + [
        "def ",
        "return",
        "from x import ",
        "A) ",
        "b. ",
        "(c) ",
        "\\frac",
        "$x$",
        "é",
        "٣",
        "日本",
        "for (",
        "  }",
        "1.5",
        "3,000",
        "1..2",
        ".5",
        "print(",
        "\r\n",
        "√",
        "≤",
        "×",
        "from a;} import ",
        "if (;",
    ]
)
_TEXTS = st.lists(_PIECES, max_size=120).map("".join) | st.text(max_size=300)


@settings(max_examples=400, deadline=None)
@given(_TEXTS)
def test_fast_counters_match_their_regexes(text):
    low = text.lower()
    assert features._words(low) == features._WORD_RE.findall(low)
    assert features._count_numbers(text) == len(features._NUMBER_RE.findall(text))
    assert features._count_code_lines(text) == len(features._CODE_LINE_RE.findall(text))
    assert features._count_choices(text) == len(features._CHOICE_RE.findall(text))
    assert features._count_math_symbols(text) == len(features._MATH_SYM_RE.findall(text))
    assert features._has_latex(text) == (features._LATEX_RE.search(text) is not None)


def test_fast_counters_on_many_lines():
    code = "\n".join(["def f(x):", "    return {x;", "A) one", "}"] * 20)
    assert (
        features._count_code_lines(code) == len(features._CODE_LINE_RE.findall(code)) == 80
    )  # a line can start and end like code
    assert features._count_choices(code) == len(features._CHOICE_RE.findall(code)) == 20


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["the", "cat", "sat", "ünï", "x1", "_", "on", "mat"]) | st.text(min_size=1, max_size=8),
        max_size=60,
    )
)
def test_memoised_ngram_set_matches_the_counting_hash(words):
    for n_buckets in (1 << 17, 1 << 4, 1000):  # powers of two take the memoised xor path
        assert hashed_word_ngram_set(words, n_buckets, 40) == set(hashed_word_ngrams(words, n_buckets, 40))


_KEYS = ["type", "text", "content", "role", "model", "messages", "tools", "tool_choice", "system", "input", "prompt",
         "thinking", "response_format", "reasoning", "max_tokens", "modalities", "audio", "function_call", "functions",
         "mcp_servers", "instructions", "image_url", "name", "output", "arguments"]  # fmt: skip
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=6))
@example({"tool_choice": {"type": []}})  # once raised: an unhashable tool_choice type
@example({"messages": [{"role": "user", "content": [{"type": {"a": 1}}]}], "system": [{"type": None}]})
def test_any_json_body_is_read_without_falling_back(body):
    """Whatever shape a client sends, the extractor reads it (a fallback would make the request unroutable)."""
    assert features.UNREADABLE not in features.extract_features(body).uses


def test_a_gemini_shaped_content_whose_role_is_not_a_string_is_still_read():
    """Found by the property test above: `{"content": {"role": [None]}}` made the Gemini walker raise."""
    f = features.extract_features({"content": {"role": [None]}})
    assert features.UNREADABLE not in f.uses
