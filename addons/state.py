"""What one LLM flow carries through the addon chain (in `flow.metadata["turnout"]`).

Addons talk to each other through the flow, never through imports of each other: each
one reads what earlier addons decided and adds its own ledger columns to `columns`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from types import ModuleType
from typing import Any

from mitmproxy import ctx, http

from turnout.ledger.pricing import Usage

KEY = "turnout"


@dataclass(eq=False)
class LLMFlow:
    provider: ModuleType
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
    model: str | None = None  # what goes upstream (routing may change it)
    body_changed: bool = False  # Forward re-serialises the body when an addon changed it
    usage_injected: bool = False  # we asked upstream for stream usage the client did not
    served_locally: bool = False  # answered by the proxy (cache, budget, breaker): never upstream
    first_byte_at: float | None = None
    stream_ended_at: float | None = None
    assembler: Any = None
    prompt_tokens: int | None = None  # the prompt as counted once for this flow (Breakers, Budget, stream estimates)
    counted_usage: Usage | None = None  # turnout's count for a stream whose usage the provider did not report
    count_failed: bool = False
    response_json: Any = None  # the answer as Record parsed (or assembled) it, for on_record callbacks
    columns: dict[str, Any] = field(default_factory=dict)  # extra ledger columns from other addons
    response_headers: dict[str, str] = field(default_factory=dict)  # x-turnout-* headers for the client
    # Called with the finished ledger row before it is written (settle a budget, price a counterfactual).
    on_record: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    recorded: bool = False
    timeout_reason: str | None = None  # set when turnout's own timeout ended the flow
    # Work deferred off the request path (observe-mode routing); `run_pending` runs it before its results are read.
    pending: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.requested_model

    def __deepcopy__(self, memo: dict[int, Any]) -> "LLMFlow":
        # mitmproxy deep-copies flow.metadata (flow.copy(), backups); this is live per-flow state.
        return self


def run_pending(llm: LLMFlow) -> None:
    """Run the flow's deferred work now (at most once each); a bug there costs its columns, never the flow."""
    while llm.pending:
        work = llm.pending.pop(0)
        try:
            work()
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).exception("turnout: deferred work failed")


def lowercase_headers(headers: http.Headers) -> dict[str, str]:
    """Name (lower-cased) -> value, repeated names joined with ", " as `Headers[name]` does.

    Built once per flow from the raw fields: every lookup on mitmproxy's `Headers` scans and
    lower-cases all of them, so reading a dozen names costs more than the whole pass.
    """
    out: dict[str, str] = {}
    for k, v in headers.fields:
        name = k.decode("latin-1").lower()
        value = v.decode("utf-8", "surrogateescape")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def set_headers(headers: http.Headers, new: dict[str, str]) -> None:
    """`headers.update(new)` in one pass: each `Headers` assignment rescans every field."""
    if not new:
        return
    present = {k.lower() for k, _ in headers.fields}
    if any(name.encode().lower() in present for name in new):
        headers.update(new)  # replacing a value: mitmproxy's way keeps its position
        return
    headers.fields = (
        *headers.fields,
        *((name.encode(), value.encode("utf-8", "surrogateescape")) for name, value in new.items()),
    )


def shutting_down() -> bool:
    """mitmproxy's master is on its way out (SIGTERM/SIGINT): `done` is then awaited, not a script reload."""
    should_exit = getattr(ctx.master, "should_exit", None)
    return should_exit is not None and should_exit.is_set()


def get(flow: http.HTTPFlow) -> LLMFlow | None:
    state = flow.metadata.get(KEY)
    return state if isinstance(state, LLMFlow) else None


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> http.Response:
    import json

    return http.Response.make(
        status,
        json.dumps(payload).encode(),
        {"content-type": "application/json", **(headers or {})},
    )
