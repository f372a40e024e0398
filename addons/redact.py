"""Redact: credentials never leave the proxy in a log line, a mitmweb view or a saved flow.

The request must reach the provider with its credentials, and mitmproxy keeps the flow object
(and shows it) from its first byte. So the credentials are hidden at each place a flow is shown,
and removed from the flow itself as soon as the request has gone upstream:
- once the answer's headers are in (or the flow failed, or turnout answered it), the flow's
  credential headers and query parameters are replaced by `REDACTED:<fingerprint>` — what
  mitmweb keeps, exports and saves from then on;
- mitmweb's flow JSON (`flow_to_json`, what the browser is sent while a call is in flight) is
  redacted as it is built, in this process only;
- mitmproxy's flow log (`-v`: the dumper's request line and, at flow_detail ≥ 2, its headers) is
  printed from a redacted copy, since an error is logged before turnout's error hook runs.
The ledger never held them: it stores a redacted path and no headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, http

from turnout.ledger.credentials import CREDENTIAL_HEADERS, redact_header, redact_path

log = logging.getLogger(__name__)


def has_credentials(req: http.Request) -> bool:
    return "?" in req.path or any(k.decode("latin-1").lower() in CREDENTIAL_HEADERS for k, _ in req.headers.fields)


def redact_request(req: http.Request) -> None:
    """Replace the request's credentials in place (only after it has been sent upstream)."""
    if "?" in req.path:
        req.path = redact_path(req.path)
    fields = req.headers.fields
    if any(k.decode("latin-1").lower() in CREDENTIAL_HEADERS for k, _ in fields):
        req.headers.fields = tuple(
            (k, redact_header(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")).encode())
            if k.decode("latin-1").lower() in CREDENTIAL_HEADERS
            else (k, v)
            for k, v in fields
        )


def redact_flow_json(data: dict[str, Any]) -> dict[str, Any]:
    """mitmweb's JSON of a flow, with the request's credentials redacted."""
    req = data.get("request")
    if isinstance(req, dict):
        if isinstance(req.get("path"), str):
            req["path"] = redact_path(req["path"])
        if isinstance(req.get("headers"), tuple | list):
            req["headers"] = tuple(
                (k, redact_header(k, v)) if isinstance(k, str) and k.lower() in CREDENTIAL_HEADERS else (k, v)
                for k, v in req["headers"]
            )
    return data


class Redact:
    def __init__(self) -> None:
        self._restore: list[Callable[[], None]] = []

    def running(self) -> None:
        self._wrap_dumper()
        self._wrap_web()

    def _wrap_dumper(self) -> None:
        dumper = ctx.master.addons.get("dumper")
        if dumper is None or "echo_flow" in dumper.__dict__:
            return
        original = dumper.echo_flow

        def echo_flow(f: http.HTTPFlow) -> None:
            if isinstance(f, http.HTTPFlow) and f.request is not None and has_credentials(f.request):
                f = f.copy()
                redact_request(f.request)
            original(f)

        dumper.echo_flow = echo_flow
        self._restore.append(lambda: dumper.__dict__.pop("echo_flow", None))

    def _wrap_web(self) -> None:
        try:
            from mitmproxy.tools.web import app
        except ImportError:  # mitmdump without the web extras: nothing to wrap
            return
        from mitmproxy.tools.web.master import WebMaster

        if not isinstance(ctx.master, WebMaster) or getattr(app.flow_to_json, "turnout_redacts", False):
            return
        original = app.flow_to_json

        def flow_to_json(flow: Any) -> dict[str, Any]:
            return redact_flow_json(original(flow))

        flow_to_json.turnout_redacts = True  # type: ignore[attr-defined]
        app.flow_to_json = flow_to_json
        self._restore.append(lambda: setattr(app, "flow_to_json", original))

    def done(self) -> None:
        while self._restore:
            self._restore.pop()()

    # The request has gone (or never will): from here on the flow keeps no credentials.

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        redact_request(flow.request)

    def error(self, flow: http.HTTPFlow) -> None:
        redact_request(flow.request)
