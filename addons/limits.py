"""What the request-limiting addons (Breakers, Budget) share: the request's scope values, its prompt
counted once per flow, and the 429 they answer with."""

from __future__ import annotations

import asyncio
import math

from mitmproxy import http

from turnout.ledger.request_size import message_overhead, prompt_text
from turnout.router.tokens import count_tokens, is_loaded

from . import state

# BPE time grows with the prompt (milliseconds for tens of thousands of tokens). Longer prompts are counted
# on a worker thread (tiktoken releases the GIL) so one big request never stalls the event loop.
INLINE_COUNT_CHARS = 16_384


def scope_props(llm: state.LLMFlow) -> dict[str, str | None]:
    """The values a request has for each budget / breaker scope."""
    cols = llm.columns
    return {
        "key": llm.api_key_fp,
        "team": cols.get("team"),
        "feature": cols.get("feature"),
        "user": cols.get("user"),
        "model": llm.model,
    }


async def flow_prompt_tokens(flow: http.HTTPFlow, llm: state.LLMFlow) -> int:
    """The request's prompt tokens in the encoding of the model it goes to, counted in full once per
    flow (Breakers and Budget both need them)."""
    n = llm.prompt_tokens
    if n is None:
        text, messages = prompt_text(llm.body)
        model = llm.model
        if len(text) > INLINE_COUNT_CHARS or not is_loaded(model):  # nor stall the loop loading an encoding
            counted = await asyncio.to_thread(count_tokens, text, model)
        else:
            counted = count_tokens(text, model)
        n = llm.prompt_tokens = counted + message_overhead(messages)
    return n


def refuse(
    flow: http.HTTPFlow,
    llm: state.LLMFlow,
    *,
    blocked_by: str,
    type: str,
    code: str,
    message: str,
    retry_after: float | None = None,
    status: int = 429,
) -> None:
    """Answer 429 (or `status`) in the provider's error shape; the request never reaches the provider."""
    headers = {"x-turnout-blocked-by": blocked_by}
    if retry_after is not None and math.isfinite(retry_after):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    else:
        headers["x-should-retry"] = "false"  # the SDKs would otherwise retry a 429 that cannot pass
    llm.served_locally = True
    llm.columns["blocked_by"] = blocked_by
    flow.response = state.json_response(
        status, llm.provider.error_body(status=status, message=message, type=type, code=code), headers
    )
