"""ErrorPage: when mitmproxy itself answers a provider call (upstream unreachable, connection
dropped), the client gets JSON an SDK can parse, not mitmproxy's HTML page.

mitmproxy builds that answer inside its HTTP layers from a status and a message, with no hook
and no flow in reach (`make_error_response` for HTTP/1, `format_error` for HTTP/2). turnout
intercepts only provider hosts, so in its process every such answer is a provider call's: this
addon swaps those two module functions for ones that write an error both OpenAI's and Anthropic's
SDKs read (`{"type": "error", "error": {"message", "type", "code"}}`) — type
`turnout_upstream_unreachable` when the connection could not be made (nothing was sent: retrying
is safe, `x-should-retry: true`), `turnout_upstream_error` otherwise — and puts them back at `done`.
A bridge, deliberately small, until turnout owns the upstream leg itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mitmproxy import http, version
from mitmproxy.net.http import http1

_UNREACHABLE = ("cannot connect", "connect call failed", "connection refused", "name or service", "no route",
                "temporary failure in name resolution", "connection killed", "getaddrinfo")  # fmt: skip


def error_kind(message: str) -> tuple[str, str, bool]:
    """(type, code, retry-safe) for mitmproxy's message."""
    low = message.lower()
    if any(s in low for s in _UNREACHABLE):
        return "turnout_upstream_unreachable", "upstream_unreachable", True
    return "turnout_upstream_error", "upstream_error", False


def error_json(status: int, message: str) -> bytes:
    type_, code, _ = error_kind(message)
    text = f"turnout: the provider could not be reached or did not answer ({message})"
    return json.dumps(
        {"type": "error", "error": {"message": text, "type": type_, "param": None, "code": code}}
    ).encode()


def error_response(status: int, message: str = "") -> bytes:
    """Drop-in for mitmproxy's `_http1.make_error_response`: the same response, as provider-style JSON."""
    _, _, retry = error_kind(message)
    resp = http.Response.make(
        status,
        error_json(status, message),
        http.Headers(
            Server=version.MITMPROXY,
            Connection="close",
            Content_Type="application/json",
            **{"x-should-retry": "true" if retry else "false"},
        ),
    )
    return http1.assemble_response(resp)


class ErrorPage:
    def __init__(self) -> None:
        self._restore: list[Callable[[], None]] = []

    def load(self, loader: Any) -> None:
        from mitmproxy.proxy.layers.http import _http1, _http2

        for module, name, replacement in (
            (_http1, "make_error_response", error_response),
            (_http2, "format_error", error_json),
        ):
            original = getattr(module, name)
            if getattr(original, "turnout", False):
                continue
            replacement.turnout = True  # type: ignore[attr-defined]
            setattr(module, name, replacement)
            self._restore.append(lambda m=module, n=name, o=original: setattr(m, n, o))

    def done(self) -> None:
        while self._restore:
            self._restore.pop()()
