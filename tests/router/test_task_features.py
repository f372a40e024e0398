"""The task model's character trigrams, gathered per word for speed, are the text's trigrams."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.router import task_model


def _plain(text: str, namespace: str = "") -> list[int]:
    """The definition: trigrams of the text with white space folded to one space and one space of padding."""
    t = " " + " ".join(text.split()) + " "
    grams = [t[i : i + task_model.CHAR_N] for i in range(len(t) - task_model.CHAR_N + 1)]
    return [zlib.crc32((namespace + g).encode("utf-8", "surrogatepass")) % task_model.HALF for g in grams]


_PIECES = st.sampled_from(list("ab é日\t\n x.,?") + ["ünï", "the ", "翻訳", "\u2028", "\x00"])
_TEXT = st.lists(_PIECES, max_size=60).map("".join) | st.text(max_size=60)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_per_word_trigrams_are_the_texts_trigrams(text: str) -> None:
    assert sorted(task_model.char_gram_buckets(text)) == sorted(_plain(text))
    assert sorted(task_model.char_gram_buckets(text)) == sorted(_plain(text))  # again, from the memo
    assert task_model.char_gram_buckets(text, "s") == _plain(text, "s")
