"""turnout's mitmproxy addons. The order of `default_addons()` is the architecture:

    prices                                                     (the price book every cost comes from)
    intercept → attribute → route → cache → breakers → budget → forward   (request hooks, in this order)
    shadow                                                     (quality evidence, off the client's path)
    record → ledger store                                      (response / stream tee / error → a row → SQLite)
    timeouts                                                   (deadlines on the upstream's answer)
    redact                                                     (credentials out of the flow, logs, mitmweb)

What they share (the ledger writer, prices, health) is one `Services` object built here and passed
to each addon that needs it; per-flow state travels on the flow (`LLMFlow`, ledger/flowstate.py).

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
    from .central_ledger import CentralLedger
    from .connectionlog import ConnectionLog
    from .contentviews import ContentViews
    from .debugchecks import DebugChecks
    from .dispatch import Dispatch
    from .errorpage import ErrorPage
    from .failover import Failover
    from .forward import Forward
    from .intercept import Intercept
    from .ledger_store import LedgerStore
    from .metrics import Metrics
    from .prices import Prices
    from .record import Record
    from .redact import Redact
    from .route import Route
    from .services import Services
    from .shadow import Shadow
    from .shared_state import SharedState
    from .timeouts import UpstreamTimeouts

    services = Services()  # the ledger writer, prices and health, shared explicitly
    return [
        Dispatch(),  # mitmproxy's event dispatch, minus its per-addon overhead (not a request concern)
        DebugChecks(),  # mitmproxy's debug-only per-message type checks, off unless asked for
        ConnectionLog(),  # mitmproxy's routine per-connection log lines, off unless asked for
        ErrorPage(),  # mitmproxy's own error answers (upstream unreachable) as provider-style JSON
        Prices(services),
        SharedState(services),  # before Cache, Breakers and Budget: the Redis they share with other instances
        Intercept(services),
        Attribute(),
        Route(services),
        Cache(services),
        Breakers(services),
        Budget(services),
        Forward(services),
        Shadow(services),  # samples what Forward sends; compares off the client's path once the call is recorded
        Record(services),
        LedgerStore(services),  # after Record: `done` runs in chain order, so the drain records before it closes
        CentralLedger(services),  # after LedgerStore: ships the rows it committed (its last ones too, at shutdown)
        # after Forward (and Shadow's copy): calls under a [[failover]] rule go to the relay; after Record and
        # LedgerStore, so at shutdown the relay closes only once the drain has let calls in flight finish
        Failover(services),
        UpstreamTimeouts(),  # deadlines for the provider's headers and a stream's silences (after Record's tee)
        Redact(),  # credentials out of the flow once it has gone upstream, and out of logs and mitmweb
        ContentViews(),  # mitmweb views of LLM requests and streams
        Metrics(services),  # Prometheus endpoint (off unless turnout_metrics_port)
    ]
