"""Reading a request body as JSON within bounds every later step can handle.

Canonicalisation, features and attribution walk the body recursively; a body nested deeper than
Python's recursion limit (a few hundred levels of content arrays is enough) would raise in the
middle of the chain, and `json.loads` itself raises RecursionError on ~100k levels. So depth is
bounded here, once, and a body past a bound is refused with a clear 400/413 rather than half-read.

A JSON escape can spell a lone UTF-16 surrogate (`"\\udc00"`), which no UTF-8 encoder, hash or
tokenizer accepts; in the parsed body turnout reasons about (never the bytes it forwards unchanged)
each one reads as U+FFFD.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from .rows import storable_text

MAX_DEPTH = 128  # real requests (tool schemas included) stay well under; the walks below it are safe
MAX_BYTES = 64 * 1024 * 1024  # above a provider's own request limits


class ParsedBody(NamedTuple):
    body: Any  # the parsed JSON, or None
    error: str | None  # why it is not JSON (forwarded unparsed), or why it is refused
    refuse: int | None = None  # an HTTP status when the request must be answered locally


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests lists/objects deeper than `limit` (iterative: no recursion to overflow)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_body(raw: bytes, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> ParsedBody:
    """The request body as JSON, or why not. Empty: (None, None)."""
    if not raw:
        return ParsedBody(None, None)
    if len(raw) > max_bytes:
        return ParsedBody(None, f"request body is {len(raw):,} bytes; turnout reads at most {max_bytes:,}", 413)
    try:
        body = json.loads(raw)
    except RecursionError:
        return ParsedBody(None, f"request body nests JSON deeper than {max_depth} levels", 400)
    except (ValueError, UnicodeDecodeError) as e:
        return ParsedBody(None, f"request body is not JSON: {e}"[:300])
    if depth_exceeds(body, max_depth):
        return ParsedBody(None, f"request body nests JSON deeper than {max_depth} levels", 400)
    if b"\\ud" in raw or b"\\uD" in raw:  # a surrogate escape: pairs decode to one character, lone ones stay
        body = _valid_text(body)
    return ParsedBody(body, None)


def _valid_text(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid_text(v) for v in value]
    return value
