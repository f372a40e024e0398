"""turnout's mitmproxy addons. The order of `default_addons()` is the architecture:

    intercept → attribute → route → cache → breakers → budget → forward   (request hooks, in this order)
    timeouts                                                   (deadlines on the upstream's answer)
    record → redact                                            (response / stream tee / error → ledger)

`Dispatch`, `DebugChecks` and `ConnectionLog` come first but are no request concerns: they make
mitmproxy's own per-request and per-connection machinery cheaper in turnout's process.

Route runs before Cache because a cache key names the model actually sent upstream (a
routed call's answer must never be served for the unrouted request). Cache runs before
Budget because a hit costs nothing: it needs no reservation and must not be blocked.
"""

from __future__ import annotations


def default_addons() -> list[object]:
    from .attribute import Attribute
    from .breakers import Breakers
    from .budget import Budget
    from .cache import Cache
    from .connectionlog import ConnectionLog
    from .contentviews import ContentViews
    from .debugchecks import DebugChecks
    from .dispatch import Dispatch
    from .errorpage import ErrorPage
    from .forward import Forward
    from .intercept import Intercept
    from .metrics import Metrics
    from .record import Record
    from .redact import Redact

    from .route import Route
    from .services import Services
    from .timeouts import UpstreamTimeouts

    services = Services()  # the ledger writer, prices and health: filled by Record, shared explicitly
    return [
        Dispatch(),  # mitmproxy's event dispatch, minus its per-addon overhead (not a request concern)
        DebugChecks(),  # mitmproxy's debug-only per-message type checks, off unless asked for
        ConnectionLog(),  # mitmproxy's routine per-connection log lines, off unless asked for
        ErrorPage(),  # mitmproxy's own error answers (upstream unreachable) as provider-style JSON
        Intercept(services),
        Attribute(),
        Route(services),
        Cache(services),
        Breakers(),
        Budget(services),
        Forward(services),
        Record(services),
        UpstreamTimeouts(),  # deadlines for the provider's headers and a stream's silences (after Record's tee)
        Redact(),  # credentials out of the flow once it has gone upstream, and out of logs and mitmweb
        ContentViews(),  # mitmweb views of LLM requests and streams
        Metrics(services),  # Prometheus endpoint (off unless turnout_metrics_port)
    ]
