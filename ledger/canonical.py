"""The canonical form of a request: what decides the answer, and nothing else.

Two requests with the same canonical form must get the same answer from a cache, and two
with different forms must never share one. So: JSON key order and whitespace are gone
(parsed and re-serialised sorted), integral floats equal ints (`1.0 == 1`), a single text
part equals a plain string, and fields that cannot change the answer (`user`, `metadata`,
`stream`, `stream_options`, …) are dropped, as are parameters equal to their documented
default. Everything else — every message, tool, schema and sampling parameter — stays.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from typing import Any

# Fields that route, label or deliver a call but do not change what the model answers.
ANSWER_NEUTRAL = frozenset(
    {"user", "metadata", "stream", "stream_options", "store", "safety_identifier", "prompt_cache_key", "service_tier"}
)
# Parameters whose documented default is the same as leaving them out.
DEFAULTS: dict[str, Any] = {
    "n": 1,
    "temperature": 1,
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
}


def _is_default(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default
    return isinstance(value, int | float) and value == default


def _normalise_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise_value(v) for v in value]
    return value


def _normalise_content(content: Any) -> Any:
    if (
        isinstance(content, list)
        and len(content) == 1
        and isinstance(content[0], dict)
        and content[0].get("type") in ("text", "input_text")
        and set(content[0]) == {"type", "text"}
    ):
        return content[0]["text"]
    return content


def _normalise_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = {k: v for k, v in message.items() if v is not None}
    if "content" in out:
        out["content"] = _normalise_content(out["content"])
    return out


def canonical_request(endpoint: str, body: dict[str, Any], model: str | None) -> dict[str, Any]:
    """The answer-deciding part of a request body, with `model` set to the model actually sent upstream."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in ANSWER_NEUTRAL or value is None:
            continue
        if key in DEFAULTS and _is_default(DEFAULTS[key], value):
            continue
        out[key] = value
    if model is not None:
        out["model"] = model
    if isinstance(out.get("messages"), list):
        out["messages"] = [_normalise_message(m) for m in out["messages"]]
    if isinstance(out.get("input"), list):
        out["input"] = [_normalise_message(m) for m in out["input"]]
    return {"endpoint": endpoint, **_normalise_value(out)}


def canonical_json(canonical: dict[str, Any]) -> str:
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(canonical_text: str, scope: str = "") -> str:
    """sha256 over the tenant scope and the canonical request: the cache key."""
    return hashlib.sha256(f"{scope}\n{canonical_text}".encode("utf-8", "surrogatepass")).hexdigest()


# -- near-identical matching (opt-in) ------------------------------------------------------

_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "."})
_SPACES = re.compile(r"\s+")
_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a full stop, not a decimal point


def _loosen_prose(text: str) -> str:
    text = _DOT.sub(" ", text.lower().translate(_PUNCT))
    return _SPACES.sub(" ", text).strip()


def loosen_text(text: str) -> str:
    """Case, whitespace and punctuation of prose stop mattering; code spans, numbers and words still do."""
    parts, last = [], 0
    for m in _CODE.finditer(text):
        parts.append(_loosen_prose(text[last : m.start()]))
        parts.append(m.group(0))
        last = m.end()
    parts.append(_loosen_prose(text[last:]))
    return " ".join(p for p in parts if p)


def loosen(canonical: dict[str, Any]) -> dict[str, Any]:
    """Apply `loosen_text` to message text only (never to tools, schemas or parameters)."""

    def fix_content(content: Any) -> Any:
        if isinstance(content, str):
            return loosen_text(content)
        if isinstance(content, list):
            return [
                {**p, "text": loosen_text(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
                for p in content
            ]
        return content

    out = dict(canonical)
    for field in ("messages", "input"):
        if isinstance(out.get(field), list):
            out[field] = [
                {**m, "content": fix_content(m.get("content"))} if isinstance(m, dict) and "content" in m else m
                for m in out[field]
            ]
    if isinstance(out.get("input"), str):
        out["input"] = loosen_text(out["input"])
    if isinstance(out.get("prompt"), str):
        out["prompt"] = loosen_text(out["prompt"])
    return out


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first field (in sorted key order) where two canonical requests differ, for replay-miss messages."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                return (sub, a.get(key, "<absent>"), b.get(key, "<absent>"))
            found = first_difference(a[key], b[key], sub)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return (f"{path} (length)", len(a), len(b))
        return None
    return None if a == b and type(a) is type(b) else (path, a, b)


def difference_count(a: Any, b: Any) -> int:
    """How many leaves differ: picks the nearest recording."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sum(difference_count(a.get(k), b.get(k)) for k in set(a) | set(b))
    if isinstance(a, list) and isinstance(b, list):
        return sum(difference_count(x, y) for x, y in zip(a, b)) + abs(len(a) - len(b))
    return 0 if a == b else 1
