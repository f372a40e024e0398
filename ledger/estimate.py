"""Usage of a stream the provider did not report it for.

A stream's usage arrives in its last event. A stream the client abandoned (or that the upstream
dropped, or turnout cut at shutdown) never gets there, yet the provider bills the whole prompt
and every token generated until it stopped; some OpenAI-compatible servers never send usage at
all. Recording such a call with no tokens would leave its cost out of the ledger and release its
budget reservation: a client that keeps cancelling streams would spend unseen. So turnout counts
what it saw — the prompt it forwarded and the output that came back — in the model's encoding,
and marks the row `usage_estimated`. Hidden reasoning tokens are billed but never streamed, so
for reasoning models the estimate is low.
"""

from __future__ import annotations

from typing import Any

from .messages import answer_parts, text_of
from .pricing import Usage


def output_text(body: Any) -> str:
    """The generated text in a (partial) answer — text, refusals, tool-call arguments, thinking — joined."""
    return text_of(answer_parts(body), kinds=("text", "tool_call", "thinking"))


def unreported_usage(
    reported: Usage | None, partial: Any, body: Any, model: str | None, prompt_tokens: int | None = None
) -> Usage:
    """What such a stream is billed for: the provider's own numbers where it sent them (Anthropic
    reports the prompt when the stream starts), our counts of the request and of `partial`, the
    answer as far as it came, for the rest. `prompt_tokens`: the request's count if already made."""
    from turnout.router.tokens import count_tokens

    from .request_size import prompt_tokens as count_prompt

    if not (reported and reported.prompt_tokens):
        prompt_tokens = count_prompt(body, model) if prompt_tokens is None else prompt_tokens
    output_tokens = count_tokens(output_text(partial), model)
    if reported is None:
        return Usage(prompt_tokens=prompt_tokens or 0, completion_tokens=output_tokens)
    return reported._replace(
        prompt_tokens=reported.prompt_tokens or prompt_tokens or 0,
        completion_tokens=max(reported.completion_tokens, output_tokens),
    )
