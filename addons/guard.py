"""Fail closed: a turnout request hook that raises answers the provider request itself.

mitmproxy logs an addon's exception and goes on with the next addon, so a bug (or an input no
one foresaw) in Route or Cache would skip Budget, Breakers and Forward: the request would go to
the real provider host — not `turnout_upstream`, past every budget, with a network call a replay
run promised not to make. Every turnout request hook is wrapped in `fail_closed`: on an
exception the flow is answered 500 in the provider's error format (`turnout_internal_error`,
naming the addon and the error), which no later hook forwards and Record records like any answer.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from . import state

log = logging.getLogger(__name__)


def answer_internal_error(flow: http.HTTPFlow, where: str, exc: BaseException) -> None:
    """Answer `flow` with a provider-format 500 saying what failed; never raises."""
    llm = state.get(flow)
    message = f"turnout: internal error in {where} ({type(exc).__name__}: {exc})"[:500]
    body = {"error": {"message": message, "type": "turnout_internal_error", "param": None, "code": "internal_error"}}
    if llm is not None:
        body = llm.provider.error_body(
            status=500, message=message, type="turnout_internal_error", code="internal_error"
        )
        llm.served_locally = True
        llm.columns["blocked_by"] = "internal_error"
    flow.response = state.json_response(500, body, {"x-should-retry": "false"})


def fail_closed(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a `request(flow)` hook (sync or async) so an exception answers the flow instead of skipping the chain."""
    where = hook.__qualname__.split(".")[0]

    def failed(flow: http.HTTPFlow, exc: BaseException) -> None:
        log.exception("turnout: %s failed on %s; answering 500 turnout_internal_error", where, flow.id)
        if flow.response is None and flow.live:
            answer_internal_error(flow, where, exc)

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def guarded_async(self: Any, flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception as e:  # noqa: BLE001
                failed(flow, e)

        return guarded_async

    @functools.wraps(hook)
    def guarded(self: Any, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as e:  # noqa: BLE001
            failed(flow, e)

    return guarded
