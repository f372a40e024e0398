"""Request features, computed from an OpenAI request body alone.

The router sees only what the client sends, so every signal the task
classifier, the difficulty model and the capability rules use is derived here
from the body: chat completions (``messages``), Responses (``input`` and
``instructions``) or legacy completions (``prompt``).

Design constraints, in order:

* Never raise. Bodies come from arbitrary clients; content may be a string, a
  list of parts, ``None`` or garbage. Unknown shapes contribute nothing.
* Deterministic. Hashing uses ``zlib.crc32`` (Python's ``hash()`` is salted
  per process), so a request maps to the same features in every process.
* Bounded cost. Text analysis looks at a capped excerpt of the last user
  message (head and tail; instructions live at one end or the other) and token
  counts are exact only up to a budget (see :func:`tokens.estimate_tokens`),
  so a 100k-token prompt costs about as much as a 4k-token one.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from itertools import chain, repeat
from operator import xor
from dataclasses import dataclass, field
from typing import Any, Iterable

from turnout.ledger.messages import gemini_field, is_gemini_body, request_parts

from .tokens import estimate_tokens

# Text analysis budget: first HEAD + last TAIL characters of the last user message.
ANALYSIS_HEAD_CHARS = 1500
ANALYSIS_TAIL_CHARS = 500
# Exact BPE counting budget per text; the rest is extrapolated.
EXACT_TOKEN_CHARS = 512

_WORD_RE = re.compile(r"\w+")
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_MATH_SYM_RE = re.compile(r"[=+*/^<>\u221a\u2211\u222b\u03c0\u2264\u2265\u00b1\u00d7\u00f7\u2260\u221e]")
_LATEX_RE = re.compile(
    r"\\(?:frac|sqrt|int|sum|prod|lim|cdot|times|alpha|beta|theta|pi|infty|le|ge|neq)\b|\$[^$\n]{1,200}\$"
)
_CODE_FENCE = "```"
_CODE_LINE_RE = re.compile(
    r"(?m)^[ \t]*(?:def |class |import |from \S+ import |#include|public |private |"
    r"function |const |let |var |return\b|SELECT |INSERT |for \(|if \(|while \(|"
    r"fn |func |package |using |console\.|print\()"
    r"|[{};][ \t]*$"
)
_CHOICE_RE = re.compile(r"(?m)^[ \t]*\(?[A-Ha-h][\).:][ \t]")
_QUESTION_WORDS = frozenset(
    "what why how when where who whom whose which explain describe compare "
    "qué cómo cuándo dónde quién por pourquoi comment quand où qui quel quelle "
    "warum wie wann wo wer welche was".split()
)
_STOPWORDS = {
    "en": frozenset("the and of to is in that it for you with this are be on not".split()),
    "es": frozenset("el la los las de que y en es por para una un con no se del".split()),
    "fr": frozenset("le la les de des et est un une que en pour pas dans du ce qui".split()),
    "de": frozenset("der die das und ist nicht ein eine zu mit den von ich sie es auf".split()),
    "pt": frozenset("o a os as de que e em um uma para com não se do da".split()),
    "it": frozenset("il lo la gli le di che e è un una per con non del della".split()),
    "nl": frozenset("de het een en van is dat niet op te zijn met voor".split()),
}
_STOPWORD_LANGS: dict[str, tuple[str, ...]] = {}
for _lang, _stop in _STOPWORDS.items():
    for _w in _stop:
        _STOPWORD_LANGS[_w] = (*_STOPWORD_LANGS.get(_w, ()), _lang)
_SCRIPT_RES = (
    ("ja", re.compile(r"[\u3040-\u30ff]")),
    ("ko", re.compile(r"[\uac00-\ud7af]")),
    ("zh", re.compile(r"[\u4e00-\u9fff]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
)

_BUILTIN_TOOL_PREFIXES = (
    "file_search", "computer", "code_interpreter", "image_generation", "mcp", "local_shell",  # OpenAI
    "bash", "text_editor", "code_execution", "web_fetch", "memory",  # Anthropic server / client-schema tools
)  # fmt: skip
_ANTHROPIC_TOOL_CHOICE = {"auto": "auto", "none": "none", "any": "required"}
_GEMINI_TOOL_CHOICE = {"AUTO": "auto", "NONE": "none", "ANY": "required", "VALIDATED": "auto"}
_GEMINI_SEARCH_TOOLS = ("googleSearch", "google_search", "googleSearchRetrieval", "google_search_retrieval")

# ---------------------------------------------------------------- counting, fast and exact
#
# These run on every proxied request (~2,000 characters each), where one regex scan costs
# 5-20 µs. Each helper returns exactly what its regex above would (tests/router check that
# on the training data and on generated text); they only skip scans that cannot match, or
# use C string methods where the text is ASCII (`\w` and `\d` then mean [A-Za-z0-9_] and [0-9]).

_ASCII_WORDS = str.maketrans({i: chr(i) if chr(i).isalnum() or chr(i) == "_" else " " for i in range(128)})
_ASCII_NUMBERS = str.maketrans({i: "0" if chr(i).isdigit() else "." if chr(i) in ".," else " " for i in range(128)})
# The same patterns with their line start spelled as a literal "\n" (the text gets one prepended): a
# pattern that starts with a literal or a character set is found by a C scan for it, where `(?m)^`
# inside an alternation makes the engine try every position.
_CODE_START_NL_RE = re.compile(
    r"\n[ \t]*(?:def |class |import |from \S+ import |#include|public |private |"
    r"function |const |let |var |return\b|SELECT |INSERT |for \(|if \(|while \(|"
    r"fn |func |package |using |console\.|print\()"
)
_CODE_END_RE = re.compile(r"(?m)[{};][ \t]*$")
_CHOICE_NL_RE = re.compile(r"\n[ \t]*\(?[A-Ha-h][\).:][ \t]")
_ASCII_MATH_SYMBOLS = tuple("=+*/^<>")


def _words(low: str) -> list[str]:
    """`_WORD_RE.findall(low)`."""
    return low.translate(_ASCII_WORDS).split() if low.isascii() else _WORD_RE.findall(low)


def _count_numbers(text: str) -> int:
    """`len(_NUMBER_RE.findall(text))`: digit runs joined by single `.`/`,` count once."""
    if not text.isascii():
        return len(_NUMBER_RE.findall(text))
    t = text.translate(_ASCII_NUMBERS)  # digits -> 0, [.,] -> ., anything else -> space
    # a number starts at a digit that does not continue one: after a space, or after a [.,] not preceded by a digit
    return t.startswith("0") + t.startswith(".0") + t.count(" 0") + t.count(" .0") + t.count("..0")


def _count_code_lines(text: str) -> int:
    """`len(_CODE_LINE_RE.findall(text))`: a code-like line start, plus a line ending in `{`, `}` or `;`
    (the two never share characters, so their counts add)."""
    return len(_CODE_START_NL_RE.findall("\n" + text)) + len(_CODE_END_RE.findall(text))


def _count_choices(text: str) -> int:
    """`len(_CHOICE_RE.findall(text))`."""
    return len(_CHOICE_NL_RE.findall("\n" + text))


def _count_math_symbols(text: str) -> int:
    """`len(_MATH_SYM_RE.findall(text))`: single characters, so the sum of their counts (ASCII text can
    hold only the first seven)."""
    if text.isascii():
        return sum(map(text.count, _ASCII_MATH_SYMBOLS))
    return len(_MATH_SYM_RE.findall(text))


def _has_latex(text: str) -> bool:
    return ("\\" in text or "$" in text) and _LATEX_RE.search(text) is not None


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """Everything the router knows about a request; pure data."""

    api: str = "unknown"  # chat | responses | completions | unknown
    model: str | None = None
    n_messages: int = 0
    roles: tuple[tuple[str, int], ...] = ()  # sorted (role, count)
    n_user_turns: int = 0
    n_assistant_turns: int = 0
    conversation_depth: int = 0  # user turns so far (1 = first turn)
    has_system: bool = False
    system_chars: int = 0
    user_chars: int = 0  # last user message
    user_tokens: int = 0
    has_tools: bool = False
    n_tools: int = 0
    tool_choice: str | None = None
    has_tool_results: bool = False
    response_format: str | None = None  # text | json_object | json_schema
    has_json_schema: bool = False
    has_images: bool = False
    has_files: bool = False
    has_audio: bool = False
    max_tokens: int | None = None
    n_code_blocks: int = 0
    n_code_lines: int = 0
    n_numbers: int = 0
    n_math_symbols: int = 0
    has_latex: bool = False
    n_question_words: int = 0
    n_question_marks: int = 0
    n_choices: int = 0  # lines that look like multiple-choice options
    n_sentences: int = 0
    n_words: int = 0
    language: str = "unknown"
    uses: frozenset[str] = field(default_factory=frozenset)  # capability tags, see policy
    user_text: str = ""  # analysis excerpt of the last user message (lower-cased)
    system_text: str = ""  # the head of the system / developer prompt (lower-cased): where API calls put the task
    words: tuple[str, ...] = ()  # words of ``user_text``; input to the hashed n-grams


# ---------------------------------------------------------------- extraction


_FLAGS = {"image": "images", "file": "files", "audio": "audio", "thinking": "reasoning_items",
          "tool_call": "tool_history", "tool_result": "tool_history", "reference": "item_reference"}  # fmt: skip


def _messages(body: dict[str, Any], sink: dict[str, bool]) -> tuple[str, list[tuple[str, str]]]:
    """(api, [(role, text)]) — one entry per message, from the one walker (ledger/messages.py); the
    kinds of non-text parts go to `sink` (images, files, audio, reasoning items, tool history)."""
    if is_gemini_body(body):
        api = "gemini"
    elif isinstance(body.get("messages"), list):
        api = "chat"
    elif "input" in body or "instructions" in body:
        api = "responses"
    elif body.get("prompt") is not None:
        api = "completions"
    else:
        return "unknown", []
    out: list[tuple[str, str]] = []
    msg, role, texts = -1, "", []
    for part in request_parts(body):
        flag = _FLAGS.get(part.kind)
        if flag is not None:
            sink[flag] = True
        if part.msg != msg:
            if msg >= 0:
                out.append((role, "\n".join(texts)))
            msg, role, texts = part.msg, part.role, []
        if part.kind in ("text", "tool_result") and part.text:
            texts.append(part.text)
    if msg >= 0:
        out.append((role, "\n".join(texts)))
    return api, out


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return None


def _language(excerpt: str, words: list[str]) -> str:
    if not excerpt.strip():
        return "unknown"
    sample = excerpt[:600]
    if not sample.isascii():
        letters = sum(1 for c in sample if c.isalpha()) or 1
        for lang, rx in _SCRIPT_RES:
            if len(rx.findall(sample)) / letters > 0.2:
                return lang
    head = words[:80]
    if not head:
        return "unknown"
    counts = Counter(chain.from_iterable(map(_STOPWORD_LANGS.get, head, repeat(()))))
    best, best_n = "unknown", 0
    for lang in _STOPWORDS:  # the first language with the most stop words
        n = counts[lang]
        if n > best_n:
            best, best_n = lang, n
    return best if best_n >= 2 or (best_n == 1 and len(head) < 8) else ("en" if sample.isascii() else "unknown")


def _gemini_tools(body: dict[str, Any], uses: set[str]) -> tuple[int, str | None]:
    """Gemini: function declarations are the client's tools; search, code execution, URL context and maps
    run at Google."""
    n_tools = 0
    for t in body.get("tools") or () if isinstance(body.get("tools"), list) else ():
        if not isinstance(t, dict):
            continue
        decls = gemini_field(t, "functionDeclarations")
        n_tools += len(decls) if isinstance(decls, list) else 0
        if any(k in t for k in _GEMINI_SEARCH_TOOLS):
            uses.add("web_search")
        elif any(k not in ("functionDeclarations", "function_declarations") for k in t):
            uses.add("builtin_tools")
    config = gemini_field(body, "toolConfig")
    calling = gemini_field(config, "functionCallingConfig") if isinstance(config, dict) else None
    mode = calling.get("mode") if isinstance(calling, dict) else None
    if n_tools:
        uses.add("tools")
    return n_tools, _GEMINI_TOOL_CHOICE.get(mode.upper(), "auto") if isinstance(mode, str) else None


def _gemini_generation(body: dict[str, Any], uses: set[str]) -> tuple[str | None, int | None]:
    """(response format, output ceiling) from `generationConfig`; thinking switched on is `thinking`."""
    config = gemini_field(body, "generationConfig")
    if not isinstance(config, dict):
        return None, None
    rf = None
    if gemini_field(config, "responseMimeType") == "application/json":
        schema = gemini_field(config, "responseSchema") or gemini_field(config, "responseJsonSchema")
        rf = "json_schema" if schema else "json_object"
    thinking = gemini_field(config, "thinkingConfig")
    if isinstance(thinking, dict) and (
        gemini_field(thinking, "includeThoughts")
        or (_int_or_none(gemini_field(thinking, "thinkingBudget")) or 0) != 0  # -1: dynamic thinking, on
        or gemini_field(thinking, "thinkingLevel")
    ):
        uses.add("thinking")
    if gemini_field(config, "responseModalities") and any(
        str(m).upper() in ("AUDIO", "IMAGE") for m in gemini_field(config, "responseModalities") or ()
    ):
        uses.add("audio")  # audio or image output: no cheaper rung is assumed to produce it
    return rf, _int_or_none(gemini_field(config, "maxOutputTokens"))


def _tools_info(body: dict[str, Any], uses: set[str], api: str) -> tuple[int, str | None]:
    if api == "gemini":
        return _gemini_tools(body, uses)
    tools = body.get("tools")
    n_tools = 0
    if isinstance(tools, list):
        for t in tools:
            if not isinstance(t, dict):
                continue
            n_tools += 1
            ttype = t.get("type")
            if isinstance(ttype, str):
                if ttype.startswith("web_search"):
                    uses.add("web_search")
                elif ttype.startswith(_BUILTIN_TOOL_PREFIXES):
                    uses.add("builtin_tools")
    functions = body.get("functions")
    if isinstance(functions, list):
        n_tools += sum(1 for f in functions if isinstance(f, dict))
    if isinstance(body.get("mcp_servers"), list) and body["mcp_servers"]:
        uses.add("builtin_tools")  # Anthropic's MCP connector: tools run by the provider
    tc = body.get("tool_choice", body.get("function_call"))
    if isinstance(tc, str):
        tool_choice: str | None = tc
    elif isinstance(tc, dict):
        # Anthropic spells the modes as {"type": "auto" | "any" | "none" | "tool"}
        kind = tc.get("type")
        tool_choice = _ANTHROPIC_TOOL_CHOICE.get(kind, "specific") if isinstance(kind, str) else "specific"
    else:
        tool_choice = None
    if n_tools:
        uses.add("tools")
    return n_tools, tool_choice


def _response_format(body: dict[str, Any]) -> str | None:
    rf = body.get("response_format")
    if isinstance(rf, dict) and isinstance(rf.get("type"), str):
        return rf["type"]
    text = body.get("text")  # Responses API: text.format
    if isinstance(text, dict):
        fmt = text.get("format")
        if isinstance(fmt, dict) and isinstance(fmt.get("type"), str):
            return fmt["type"]
    return None


def _excerpt(text: str) -> str:
    if len(text) <= ANALYSIS_HEAD_CHARS + ANALYSIS_TAIL_CHARS:
        return text
    return text[:ANALYSIS_HEAD_CHARS] + "\n" + text[-ANALYSIS_TAIL_CHARS:]


SYSTEM_CHARS = 600  # of the system / developer prompt read for the task: instructions lead it
UNREADABLE = "unreadable"  # a `uses` tag no model has: a body the extractor could not read is never routed


def extract_features(body: Any) -> RequestFeatures:
    """Features of one request body: defaults for a body that is not an object; for one the extractor
    fails on, defaults plus the UNREADABLE tag, which keeps it from being routed."""
    if not isinstance(body, dict):
        return RequestFeatures()
    try:
        return _extract(body)
    except Exception:  # noqa: BLE001 - defensive: a feature bug must never break proxying — nor let a request skip the checks
        model = body.get("model")
        return RequestFeatures(model=model if isinstance(model, str) else None, uses=frozenset({UNREADABLE}))


def _extract(body: dict[str, Any]) -> RequestFeatures:
    sink: dict[str, bool] = {}
    api, msgs = _messages(body, sink)
    model = body.get("model")
    model = model if isinstance(model, str) else None

    role_counts: dict[str, int] = {}
    system_text_len = 0
    system_parts: list[str] = []
    last_user = ""
    for role, text in msgs:
        role_counts[role] = role_counts.get(role, 0) + 1
        if role in ("system", "developer"):
            system_text_len += len(text)
            if sum(map(len, system_parts)) < SYSTEM_CHARS:
                system_parts.append(text)
        elif role == "user":
            last_user = text
    # BPE is the dearest step here: count only the text a model reads (not every message of a long history)
    user_tokens = estimate_tokens(last_user, EXACT_TOKEN_CHARS) if last_user else 0
    n_user = role_counts.get("user", 0)
    n_assistant = role_counts.get("assistant", 0)

    uses: set[str] = set()
    n_tools, tool_choice = _tools_info(body, uses, api)
    rf = _response_format(body)
    if rf in ("json_schema", "json_object"):
        uses.add(rf)
    for tag in ("images", "files", "audio", "reasoning_items", "item_reference"):
        if sink.get(tag):
            uses.add(tag)
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        uses.add("audio")
    reasoning = body.get("reasoning")
    if body.get("reasoning_effort") is not None or (
        isinstance(reasoning, dict) and reasoning.get("effort") is not None
    ):
        uses.add("reasoning_effort")
    if body.get("prediction") is not None:
        uses.add("prediction")
    if body.get("logprobs") or body.get("top_logprobs"):
        uses.add("logprobs")
    if body.get("web_search_options") is not None:
        uses.add("web_search")
    text_opts = body.get("text")
    if body.get("verbosity") is not None or (isinstance(text_opts, dict) and text_opts.get("verbosity") is not None):
        uses.add("verbosity")
    if body.get("previous_response_id") is not None or body.get("conversation") is not None:
        uses.add("previous_response")
    if body.get("background"):
        uses.add("background")
    thinking = body.get("thinking")  # Anthropic extended thinking: {"type": "enabled", "budget_tokens": …}
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        uses.add("thinking")

    max_tokens = None
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        max_tokens = _int_or_none(body.get(key))
        if max_tokens is not None:
            break
    if api == "gemini":
        rf, max_tokens = _gemini_generation(body, uses)
        if rf is not None:
            uses.add(rf)

    excerpt = _excerpt(last_user)
    low = excerpt.lower()
    words = _words(low)
    return RequestFeatures(
        api=api,
        model=model,
        n_messages=len(msgs),
        roles=tuple(sorted(role_counts.items())),
        n_user_turns=n_user,
        n_assistant_turns=n_assistant,
        conversation_depth=n_user,
        has_system=system_text_len > 0,
        system_chars=system_text_len,
        user_chars=len(last_user),
        user_tokens=user_tokens,
        has_tools=n_tools > 0,
        n_tools=n_tools,
        tool_choice=tool_choice,
        has_tool_results=bool(sink.get("tool_history")) or "tool" in role_counts or "function" in role_counts,
        response_format=rf,
        has_json_schema=rf == "json_schema",
        has_images="images" in uses,
        has_files="files" in uses,
        has_audio="audio" in uses,
        max_tokens=max_tokens,
        n_code_blocks=excerpt.count(_CODE_FENCE) // 2,
        n_code_lines=_count_code_lines(excerpt),
        n_numbers=_count_numbers(excerpt),
        n_math_symbols=_count_math_symbols(excerpt),
        has_latex=_has_latex(excerpt),
        n_question_words=sum(map(_QUESTION_WORDS.__contains__, words)),
        n_question_marks=excerpt.count("?"),
        n_choices=_count_choices(excerpt),
        n_sentences=excerpt.count(". ") + excerpt.count("? ") + excerpt.count("! ") + excerpt.count("\n") + 1,
        n_words=len(words),
        language=_language(excerpt, words),
        uses=frozenset(uses),
        user_text=low,
        system_text="\n".join(system_parts)[:SYSTEM_CHARS].lower(),
        words=tuple(words),
    )


# ---------------------------------------------------------------- hashed n-grams


def hashed_word_ngrams(words: Iterable[str], n_buckets: int, max_words: int = 400) -> dict[int, float]:
    """Counts of word unigrams and bigrams in a fixed hashing space.

    Each word is hashed once with crc32; a bigram's hash is a mix of its two
    word hashes, which keeps the cost linear in words with one crc32 each.
    Only the first ``max_words`` words are used (bounded cost).
    """
    crc = zlib.crc32
    hs = [crc(w.encode("utf-8", "surrogatepass")) for w in list(words)[:max_words]]
    counts: dict[int, float] = {}
    get = counts.get
    for h in hs:
        b = h % n_buckets
        counts[b] = get(b, 0.0) + 1.0
    for i in range(len(hs) - 1):
        b = (((hs[i] * 0x9E3779B1) & 0xFFFFFFFF) ^ hs[i + 1]) % n_buckets
        counts[b] = get(b, 0.0) + 1.0
    return counts


def hashed_word_ngram_set(words: Iterable[str], n_buckets: int, max_words: int = 400) -> set[int]:
    """Buckets present among the word unigrams/bigrams (same hashing as :func:`hashed_word_ngrams`).

    The difficulty model uses binary presence. This runs on every proxied request, so each
    word's two bucket halves come from a bounded memo (requests share most words), and for a
    power-of-two bucket count the bigram bucket is just their xor — ``(a ^ b) % 2**k ==
    (a % 2**k) ^ (b % 2**k)`` — all of it in C-level ``map`` calls.
    """
    unis, pairs = ngram_buckets(list(words)[:max_words], n_buckets)
    out = set(unis)
    out.update(pairs)
    return out


def hashed_word_ngram_counts(words: Iterable[str], n_buckets: int, max_words: int = 400) -> Counter[int]:
    """Bucket -> count of the word unigrams/bigrams (the hashing of :func:`hashed_word_ngram_set`)."""
    unis, pairs = ngram_buckets(list(words)[:max_words], n_buckets)
    out = Counter(unis)
    out.update(pairs)
    return out


def ngram_buckets(ws: list[str], n_buckets: int) -> tuple[list[int], Iterable[int]]:
    """The buckets of the words' unigrams (a list) and of their bigrams (an iterator), memoised per word."""
    if n_buckets & (n_buckets - 1):  # not a power of two: the plain definition
        hs = [zlib.crc32(w.encode("utf-8", "surrogatepass")) for w in ws]
        return [h % n_buckets for h in hs], [
            (((a * 0x9E3779B1) & 0xFFFFFFFF) ^ b) % n_buckets for a, b in zip(hs, hs[1:])
        ]
    memo = _BUCKET_MEMO.get(n_buckets)
    if memo is None or len(memo[0]) > _BUCKET_MEMO_MAX:
        memo = _BUCKET_MEMO[n_buckets] = ({}, {})
    uni_of, mix_of = memo
    unis = list(map(uni_of.get, ws))
    if None in unis:
        mask = n_buckets - 1
        for i, u in enumerate(unis):
            if u is None:
                h = zlib.crc32(ws[i].encode("utf-8", "surrogatepass"))
                unis[i] = uni_of[ws[i]] = h & mask
                mix_of[ws[i]] = ((h * 0x9E3779B1) & 0xFFFFFFFF) & mask
    return unis, map(xor, map(mix_of.__getitem__, ws[:-1]), unis[1:])


# n_buckets -> (word -> crc32 % n, word -> (crc32 * golden ratio mod 2**32) % n)
_BUCKET_MEMO: dict[int, tuple[dict[str, int], dict[str, int]]] = {}
_BUCKET_MEMO_MAX = 50_000  # words; ~7 MB at most, and a vocabulary of common words fits


def words_of(text: str) -> list[str]:
    """Lower-cased word tokens, the same tokenisation :class:`RequestFeatures` uses."""
    return _words(text.lower())


def hashed_char_ngrams(
    text: str, n_buckets: int, sizes: Iterable[int] = (3, 4), max_chars: int = 1000
) -> dict[int, float]:
    """Counts of character n-grams (within-word, space-padded) of the first ``max_chars`` characters."""
    s = " " + " ".join(_WORD_RE.findall(text[:max_chars].lower())) + " "
    counts: dict[int, float] = {}
    crc = zlib.crc32
    data = s.encode("utf-8", "surrogatepass")
    # byte n-grams: cheaper than char slicing and stable across processes
    for n in sizes:
        prefix = f"c{n}:".encode()
        for i in range(len(data) - n + 1):
            b = crc(prefix + data[i : i + n]) % n_buckets
            counts[b] = counts.get(b, 0.0) + 1.0
    return counts
