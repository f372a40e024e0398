"""Metrics: an optional Prometheus text endpoint (`turnout proxy --metrics-port P`).

Counters and histograms per requested model, provider and feature, updated from each finished
ledger row (Record calls `llm.on_record` callbacks with it), so the numbers are the ledger's own.
The endpoint is prometheus-client's WSGI server on 127.0.0.1, on its own thread and registry.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, exceptions, http

from turnout.ledger.circuit import GAUGE as CIRCUIT_GAUGE

from . import state
from .services import Services

log = logging.getLogger(__name__)

LABELS = ("model", "provider", "feature")
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


class _Children:
    """The labelled children of every metric for one (model, provider, feature): one dict lookup per flow."""

    __slots__ = ("requests", "errors", "prompt", "cached", "completion", "cost", "hits", "saved", "latency", "ttft")

    def __init__(self, m: "MetricSet", labels: tuple[str, str, str]) -> None:
        self.requests = m.requests.labels(*labels)
        self.errors = m.errors.labels(*labels)
        self.prompt = m.tokens.labels(*labels, "prompt")
        self.cached = m.tokens.labels(*labels, "cached_prompt")
        self.completion = m.tokens.labels(*labels, "completion")
        self.cost = m.cost.labels(*labels)
        self.hits = m.cache_hits.labels(*labels)
        self.saved = m.cache_saved.labels(*labels)
        self.latency = m.latency.labels(*labels)
        self.ttft = m.ttft.labels(*labels)


class MetricSet:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.quality_watched = False
        r = self.registry
        self.requests = Counter("turnout_requests", "LLM calls recorded", LABELS, registry=r)
        self.errors = Counter("turnout_errors", "LLM calls that ended in an error", LABELS, registry=r)
        self.tokens = Counter("turnout_tokens", "Tokens by kind", (*LABELS, "kind"), registry=r)
        self.cost = Counter("turnout_cost_usd", "Cost in USD (priced calls only)", LABELS, registry=r)
        self.cache_hits = Counter("turnout_cache_hits", "Calls answered from turnout's cache", LABELS, registry=r)
        self.cache_saved = Counter("turnout_cache_saved_usd", "USD saved by cache hits", LABELS, registry=r)
        self.latency = Histogram(
            "turnout_latency_seconds", "Call latency, request to last byte", LABELS, buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "turnout_ttft_seconds", "Time to first streamed byte", LABELS, buckets=LATENCY_BUCKETS, registry=r
        )
        self._children: dict[tuple[str, str, str], _Children] = {}
        from prometheus_client import Gauge

        self.ledger_up = Gauge(
            "turnout_ledger_up", "1 while ledger writes succeed, 0 from the first failure", registry=r
        )
        self.ledger_rows = Gauge(
            "turnout_ledger_backlog_rows", "Rows queued for the ledger, not yet written", registry=r
        )
        self.ledger_bytes = Gauge("turnout_ledger_backlog_bytes", "Bytes of rows queued for the ledger", registry=r)
        self.ledger_rejected = Gauge(
            "turnout_ledger_rejected_rows", "Rows SQLite refused, kept as events rows", registry=r
        )
        self.state_up = Gauge(
            "turnout_state_up",
            "1 while the shared state (--state) answers, 0 while it is down; absent without it",
            registry=r,
        )
        self.state_errors = Gauge(
            "turnout_state_errors", "Shared-state calls that failed or timed out since start", registry=r
        )

        self.central_up = Gauge(
            "turnout_central_up",
            "1 while the central ledger (turnout_central) takes rows, 0 while it is down; absent without it",
            registry=r,
        )
        self.central_backlog = Gauge(
            "turnout_central_backlog_rows", "Ledger rows waiting in the local outbox for the central ledger", registry=r
        )

    def watch_central(self, services: Any) -> None:
        def up() -> float:
            c = services.central
            return float("nan") if c is None or c.healthy is None else float(c.healthy)

        self.central_up.set_function(up)
        self.central_backlog.set_function(lambda: 0.0 if services.central is None else float(services.central.backlog))

    def watch_state(self, services: Any) -> None:
        """`services.state` may be replaced by a config reload: read it at every scrape."""
        self.state_up.set_function(lambda: float("nan") if services.state is None else float(services.state.healthy))
        self.state_errors.set_function(lambda: 0.0 if services.state is None else float(services.state.errors))

    def watch_writer(self, writer: Any) -> None:
        """Read the writer's health at every scrape (prometheus-client calls these on its own thread)."""
        self.ledger_up.set_function(lambda: 1.0 if writer.healthy else 0.0)
        self.ledger_rows.set_function(lambda: float(writer.backlog))
        self.ledger_bytes.set_function(lambda: float(writer.backlog_bytes))
        self.ledger_rejected.set_function(lambda: float(writer.rejected))

    def watch_quality(self, services: Any) -> None:
        """Shadow's measured pass rate per routing group, read at every scrape."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        class Quality:
            def collect(self):
                g = GaugeMetricFamily(
                    "turnout_quality_pass_rate",
                    "Shadow evaluations: pass rate of the cheaper model per group (rolling window)",
                    labels=("provider", "reference", "candidate", "task"),
                )
                d = GaugeMetricFamily(
                    "turnout_quality_degraded", "1 while a routed group's measured quality is below target",
                    labels=("provider", "reference", "candidate", "task"),
                )  # fmt: skip
                for key, rolling in list(services.quality.items()):
                    if rolling.rate is not None:
                        g.add_metric(list(key), rolling.rate)
                        d.add_metric(list(key), 1.0 if key in services.degraded else 0.0)
                yield g
                yield d
                c = GaugeMetricFamily(
                    "turnout_shadow_evals", "Shadow comparisons by verdict, and shadows dropped (draining, queue full)",
                    labels=("verdict",),
                )  # fmt: skip
                for verdict, n in list(services.shadow_counts.items()):
                    c.add_metric([verdict], float(n))
                yield c
                f = GaugeMetricFamily(
                    "turnout_provider_circuit", "Failover circuit per provider: 0 closed, 1 half-open (probing), 2 open",
                    labels=("provider",),
                )  # fmt: skip
                for provider, circuit in list(services.circuits.items()):
                    f.add_metric([provider], float(CIRCUIT_GAUGE.get(circuit, 0)))
                yield f
                if services.pool_in_use is not None:
                    yield GaugeMetricFamily(
                        "turnout_warm_pool_in_use", "Provider calls the relay's warm pool carries now",
                        value=float(services.pool_in_use()),
                    )  # fmt: skip
                    yield CounterMetricFamily(
                        "turnout_warm_pool_overflow", "Calls that found the warm pool full and used their own connection",
                        value=float(services.pool_overflow),
                    )  # fmt: skip
                    by_version = CounterMetricFamily(
                        "turnout_warm_pool_responses", "Provider answers on the relay's pooled connections, by HTTP version",
                        labels=("http_version",),
                    )  # fmt: skip
                    for version, n in list(services.pool_responses.items()):
                        by_version.add_metric([version], float(n))
                    yield by_version

        self.registry.register(Quality())
        self.quality_watched = True

    def observe(self, row: dict[str, Any]) -> None:
        labels = (row.get("requested_model") or "", row.get("provider") or "", row.get("feature") or "")
        c = self._children.get(labels)
        if c is None:
            c = self._children[labels] = _Children(self, labels)
        c.requests.inc()
        if row.get("error"):
            c.errors.inc()
        if row.get("prompt_tokens"):
            c.prompt.inc(row["prompt_tokens"])
        if row.get("cached_prompt_tokens"):
            c.cached.inc(row["cached_prompt_tokens"])
        if row.get("completion_tokens"):
            c.completion.inc(row["completion_tokens"])
        if row.get("cost_usd"):
            c.cost.inc(row["cost_usd"])
        if row.get("cache") == "hit":
            c.hits.inc()
            if row.get("saved_usd"):
                c.saved.inc(row["saved_usd"])
        if row.get("latency_ms") is not None:
            c.latency.observe(row["latency_ms"] / 1000)
        if row.get("ttft_ms") is not None:
            c.ttft.observe(row["ttft_ms"] / 1000)


class Metrics:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self.metrics: MetricSet | None = None
        self.server: Any = None

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_metrics_port",
            int,
            0,
            "Serve Prometheus metrics (requests, tokens, cost, cache, latency per model/provider/feature) "
            "at http://127.0.0.1:PORT/metrics; 0 turns the endpoint off.",
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_metrics_port" not in updated:
            return
        port = ctx.options.turnout_metrics_port
        if port < 0 or port > 65535:
            raise exceptions.OptionsError(f"turnout_metrics_port: not a port: {port}")
        self._stop()
        if port == 0:
            return
        from prometheus_client import start_http_server

        self.metrics = self.metrics or MetricSet()
        if self.services.writer is not None:
            self.metrics.watch_writer(self.services.writer)
        if not self.metrics.quality_watched:
            self.metrics.watch_quality(self.services)
            self.metrics.watch_state(self.services)
            self.metrics.watch_central(self.services)
        try:
            self.server, _ = start_http_server(port, addr="127.0.0.1", registry=self.metrics.registry)
        except OSError as e:
            raise exceptions.OptionsError(f"turnout_metrics_port: cannot listen on 127.0.0.1:{port}: {e}") from None
        print(f"turnout: metrics on http://127.0.0.1:{port}/metrics", flush=True)

    def request(self, flow: http.HTTPFlow) -> None:
        if self.server is None or self.metrics is None:
            return
        llm = state.get(flow)
        if llm is not None:
            llm.on_record.append(self.metrics.observe)

    def _stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def done(self) -> None:
        self._stop()
