"""UpstreamTimeouts: a provider that hangs ends in a provider-format error and a recorded row.

mitmproxy itself only knows `tcp_timeout` (600 s of silence on a connection, then a reset with
no status). Two deadlines per provider flow instead:
- `turnout_upstream_timeout`: from the request to the response headers (connect included). On
  expiry, over an HTTP/1.1 upstream connection, turnout hands mitmproxy a `504` in the provider's
  error format as if the upstream had sent it (`turnout_upstream_timeout`, `connection: close`,
  `x-should-retry: false` — the provider may still be working, and billing, so a retry is the
  application's call): it goes through the response hooks like any answer, so the row and the
  client's error agree. Elsewhere (HTTP/2 upstream, still connecting) the flow is killed.
- `turnout_stream_idle_timeout`: the longest silence inside a streamed answer; on expiry the
  upstream connection is closed, the client's stream ends cut, and the row says why.
Generous defaults: reasoning models can think for minutes before their first byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import events

from turnout.ledger.durations import parse_duration

from . import state

log = logging.getLogger(__name__)


def synthetic_response(status: int, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 response on the wire, as an upstream would send it."""
    data = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} {'Gateway Timeout' if status == 504 else 'Error'}", "content-type: application/json",
            f"content-length: {len(data)}", "connection: close", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class IdleWatch:
    """Wraps the response's stream callable: notes when bytes last came."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last = time.monotonic()

    def __call__(self, data: bytes) -> Any:
        self.last = time.monotonic()
        if callable(self.inner):
            return self.inner(data)
        return data


class UpstreamTimeouts:
    def __init__(self) -> None:
        self.first_byte = 600.0
        self.idle = 300.0
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_upstream_timeout", str, "10m",
            "Longest wait for a provider's response headers (connect included) before the client gets a 504 "
            "turnout_upstream_timeout. Reasoning models can think for minutes: keep it generous.",
        )  # fmt: skip
        loader.add_option(
            "turnout_stream_idle_timeout", str, "5m",
            "Longest silence inside a streamed answer before turnout closes it (recorded as cut by the timeout).",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        for name in ("turnout_upstream_timeout", "turnout_stream_idle_timeout"):
            if name in updated:
                try:
                    seconds = parse_duration(getattr(ctx.options, name))
                except ValueError as e:
                    raise exceptions.OptionsError(f"{name}: {e}") from None
                if seconds <= 0:
                    raise exceptions.OptionsError(f"{name}: must be longer than 0s")
                if name == "turnout_upstream_timeout":
                    self.first_byte = seconds
                else:
                    self.idle = seconds

    def request(self, flow: http.HTTPFlow) -> None:
        llm = state.get(flow)
        if llm is None or flow.response or flow.error or not flow.live:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timers[flow.id] = loop.call_later(self.first_byte, self._no_headers, flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
        llm = state.get(flow)
        if llm is None or flow.response is None or not flow.response.stream or llm.served_locally:
            return
        watch = IdleWatch(flow.response.stream)
        flow.response.stream = watch
        asyncio.get_running_loop().call_later(self.idle, self._check_idle, flow, watch)

    def response(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)

    def _cancel(self, flow: http.HTTPFlow) -> None:
        timer = self._timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()

    def _no_headers(self, flow: http.HTTPFlow) -> None:
        self._timers.pop(flow.id, None)
        if flow.response is not None or flow.error or not flow.live:
            return
        llm = state.get(flow)
        message = (
            f"turnout: the provider sent no response headers within {self.first_byte:g}s (turnout_upstream_timeout)"
        )
        log.warning("%s: %s", message, llm.path if llm else flow.id)
        handler, server = self._handler(flow), flow.server_conn
        if handler is not None and server in handler.transports and server.alpn != b"h2" and llm is not None:
            body = llm.provider.error_body(
                status=504, message=message, type="turnout_upstream_timeout", code="upstream_timeout"
            )
            data = synthetic_response(504, body, {"x-should-retry": "false", "x-turnout-timeout": "upstream"})
            task = asyncio.ensure_future(handler.server_event(events.DataReceived(server, data)))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        else:
            if llm is not None:
                llm.recording.timeout_reason = message
            flow.kill()

    def _check_idle(self, flow: http.HTTPFlow, watch: IdleWatch) -> None:
        llm = state.get(flow)
        if not flow.live or flow.error or llm is None or llm.recording.stream_ended_at is not None:
            return
        quiet = time.monotonic() - watch.last
        if quiet < self.idle:
            asyncio.get_running_loop().call_later(self.idle - quiet, self._check_idle, flow, watch)
            return
        llm.recording.timeout_reason = (
            f"turnout: the stream was silent for {self.idle:g}s (turnout_stream_idle_timeout)"
        )
        log.warning("%s: %s", llm.recording.timeout_reason, llm.path)
        handler, server = self._handler(flow), flow.server_conn
        io = handler.transports.get(server) if handler is not None else None
        if io is not None and io.writer is not None:
            io.writer.close()  # the upstream is gone from the stream's point of view: it ends cut
        else:
            flow.kill()

    @staticmethod
    def _handler(flow: http.HTTPFlow) -> Any:
        server = ctx.master.addons.get("proxyserver")
        return getattr(server, "connections", {}).get(flow.client_conn.id) if server is not None else None
