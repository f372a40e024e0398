"""What one LLM flow carries through the addon chain: one record, in three groups.

Request facts are set once by Intercept and never change; decisions are what the request addons
add in chain order (the model sent, ledger columns, headers for the client, callbacks run with the
finished row); `recording` is what Record, the stream tee and the timeouts keep while the answer
arrives, and nobody else reads. Plain data, no proxy: `ledger/flowrow.py` builds the ledger row
from it, and tests build it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .pricing import Usage
from .providers.base import Provider, StreamAssembler


@dataclass(eq=False)
class Recording:
    assembler: StreamAssembler | None = None  # a streamed answer's copy, assembled as it passes
    first_byte_at: float | None = None
    stream_ended_at: float | None = None
    counted_usage: Usage | None = None  # turnout's count for a stream whose usage the provider did not report
    count_failed: bool = False
    timeout_reason: str | None = None  # set when turnout's own timeout ended the flow
    recorded: bool = False


@dataclass(eq=False)
class LLMFlow:
    # -- request facts (Intercept) --
    provider: Provider
    host: str  # as the client addressed it (before any upstream redirect)
    path: str  # credential query parameters redacted
    endpoint: str | None  # None: a provider path we forward and record without parsing
    body: Any  # the client's request body as parsed JSON (None when it is not JSON)
    body_error: str | None
    request_text: str | bytes  # the body exactly as the client sent it (decoded; bytes when not UTF-8)
    requested_model: str | None
    api_key_fp: str | None
    stream: bool
    credential_fp: str | None = None  # every credential the request carries, hashed: the cache's tenant
    headers: dict[str, str] = field(default_factory=dict)  # the client's request headers, names lower-cased
    started: float = field(default_factory=time.time)
    prompt_tokens: int | None = None  # the prompt as counted once for this flow (Breakers, Budget, estimates)
    # -- decisions (the request addons, in chain order) --
    model: str | None = None  # what goes upstream (routing may change it)
    cheaper_model: str | None = None  # the next rung down the router considered (routed or kept)
    answered_by: str | None = None  # the provider that answered when failover moved the call (priced there)
    body_changed: bool = False  # Forward re-serialises the body when an addon changed it
    usage_injected: bool = False  # we asked upstream for stream usage the client did not
    served_locally: bool = False  # answered by the proxy (cache, budget, breaker): never upstream
    # the relay answered for a provider that gave no answer (unreachable, no headers in time): why
    gateway_error: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # ledger columns the addons add
    response_headers: dict[str, str] = field(default_factory=dict)  # x-turnout-* headers for the client
    # Called with the finished ledger row before it is written (settle a budget, price a counterfactual).
    on_record: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    # Work deferred off the request path (observe-mode routing); run before its results are read.
    pending: list[Callable[[], None]] = field(default_factory=list)
    # -- the answer --
    response_json: Any = None  # as Record parsed (or assembled) it, for on_record callbacks
    recording: Recording = field(default_factory=Recording)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.requested_model

    def __deepcopy__(self, memo: dict[int, Any]) -> "LLMFlow":
        # mitmproxy deep-copies flow.metadata (flow.copy(), backups); this is live per-flow state.
        return self
