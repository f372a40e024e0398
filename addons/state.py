"""The per-flow record on a mitmproxy flow (`flow.metadata["turnout"]`, an `LLMFlow` from
`ledger/flowstate.py`) and the small helpers the addons share to read and answer it.

Addons talk to each other through the flow, never through imports of each other: each
one reads what earlier addons decided and adds its own ledger columns to `columns`.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, http

from turnout.ledger.flowstate import LLMFlow, Recording

__all__ = [
    "KEY",
    "LLMFlow",
    "Recording",
    "get",
    "json_response",
    "lowercase_headers",
    "run_pending",
    "set_headers",
    "shutting_down",
]

KEY = "turnout"


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
