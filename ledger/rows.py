"""Making any row storable before it is queued: one bad character must never stop the ledger.

Text reaches a row from clients (a `user` of `"u\\udc00"`, a header with a raw 0xFF byte, decoded
with surrogateescape) and from models (a stream that splits an emoji's surrogate pair across two
chunks, so the assembled text holds `"\\ud83d"` then `"\\ude00"`). SQLite stores UTF-8, and Python
refuses to encode a lone surrogate: such a row would fail every write attempt. Here a pair split
across chunks is joined back into its character and any surrogate left alone becomes U+FFFD.
Integers SQLite cannot hold become text; nested values become JSON (ASCII-escaped, so always storable).
"""

from __future__ import annotations

import json
from typing import Any

SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1


def storable_text(text: str) -> str:
    """`text` as valid Unicode: split surrogate pairs joined, lone surrogates replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def storable_value(value: Any) -> Any:
    """A value SQLite accepts as it is; what it would refuse is made so without losing content."""
    if value is None or isinstance(value, float | bytes):
        return value
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if SQLITE_INT_MIN <= value <= SQLITE_INT_MAX else str(value)
    return json.dumps(value, default=str)  # ensure_ascii: escapes surrogates, so the text always encodes


def storable_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every value storable; the same dict object when nothing needed changing."""
    fixed = None
    for key, value in row.items():
        if isinstance(value, str) and value.isascii():
            continue  # the common case, checked without a call
        new = storable_value(value)
        if new is not value:
            if fixed is None:
                fixed = dict(row)
            fixed[key] = new
    return row if fixed is None else fixed


def row_bytes(row: dict[str, Any]) -> int:
    """Roughly what a queued row holds in memory: its text and bytes, plus a fixed overhead."""
    return 256 + sum(len(v) for v in row.values() if isinstance(v, str | bytes))


def quarantine_data(row: dict[str, Any]) -> str:
    """The row as ASCII JSON, for an `events` row when the row itself could not be written."""
    return json.dumps(row, default=repr, ensure_ascii=True)
