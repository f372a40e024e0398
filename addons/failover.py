"""Failover: a call under a `[[failover]]` rule goes through the relay (addons/relay.py), which tries
its provider and then the rule's targets, translated; this addon hands the call over and reads back
who answered.

It runs right after Forward, so it sees the request exactly as it would leave (body, headers and any
`--upstream` redirect), and points it at the relay instead, with where it was going. Calls turnout
answers itself (cache hits, budget refusals) never reach it, and calls under no rule are untouched.
On the answer's headers it records the provider and model that answered, the one asked for
(`failover_from`), why, and every target tried; the row is priced at the answering model.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy import server_hooks

from turnout.ledger.failover_config import FailoverConfig, parse_failover
from turnout.ledger.providers import PROVIDERS

from . import config, state
from .guard import fail_closed
from .relay import CALL, GATEWAY_ERROR, TOKEN, Relay
from .services import Services

log = logging.getLogger(__name__)

# turnout_warm_pool: which calls the relay's warm provider connections carry
WARM_POOL_MODES = ("new-connections", "all", "off")

# endpoint -> the client's wire format, for the endpoints failover translates
FORMATS = {
    ("openai", "chat"): "openai",
    ("anthropic", "messages"): "anthropic",
    ("gemini", "chat"): "openai",  # Gemini's OpenAI-compatible endpoint
    ("gemini", "generate"): "gemini",
    ("gemini", "stream"): "gemini",
    ("gemini", "stream_json"): "gemini",
}


class Failover:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self.cfg = FailoverConfig()
        self.warm_pool = "off"
        self.relay: Relay | None = None
        # client connections with a provider connection of their own (mitmproxy's), and those whose
        # first call the relay carried: the next call on them opens their own, which serves the rest
        self.own_upstream: set[str] = set()
        self.relayed: set[str] = set()
        # flows the relay carries now: each holds one of its pool's connections until its answer ends
        self.in_pool: set[str] = set()

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_failover", bool, True, "Fail over across providers as the config's [[failover]] rules say."
        )
        loader.add_option(
            "turnout_warm_pool",
            str,
            "new-connections",
            "Which provider calls go through turnout's relay, whose pooled connections stay warm across client "
            "connections: the first call of each new client connection (which would otherwise pay a TCP and TLS "
            "handshake with the provider; later calls on a kept-alive connection use its own), all, or off.",
            choices=WARM_POOL_MODES,
        )
        loader.add_option(
            "turnout_warm_pool_size", int, 256,
            "Most provider connections the relay's pool holds. A call the pool has no free connection for goes "
            "on its client connection's own (as with the pool off): it never waits for another client's stream.",
        )  # fmt: skip
        loader.add_option(
            "turnout_warm_pool_http2", bool, False,
            "Offer HTTP/2 to providers on the relay's pooled connections: many calls share one connection where "
            "the provider accepts it (HTTP/1.1 keep-alive where it does not), fewer connections for bursts of "
            "new clients, at some CPU per call (httpx instead of aiohttp).",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if not updated & {
            "turnout_config",
            "turnout_failover",
            "turnout_warm_pool",
            "turnout_warm_pool_size",
            "turnout_warm_pool_http2",
            "turnout_upstream",
            "turnout_upstreams",
            "mode",
        }:
            return
        path = getattr(ctx.options, "turnout_config", "")
        try:
            data = config.load_config(path)
            cfg = parse_failover(data.get("failover"), data.get("providers"), data.get("failover_circuit"),
                                 frozenset(PROVIDERS))  # fmt: skip
        except ValueError as e:
            raise exceptions.OptionsError(f"turnout_config [[failover]]: {e}") from None
        if ctx.options.turnout_warm_pool_size < 1:
            raise exceptions.OptionsError("turnout_warm_pool_size must be 1 or more")
        self.cfg = cfg if ctx.options.turnout_failover else FailoverConfig()
        self.warm_pool = ctx.options.turnout_warm_pool
        chained = [m for m in getattr(ctx.options, "mode", []) if m.startswith("upstream")]
        if chained and self.warm_pool != "off":
            # the relay dials providers itself: behind an upstream proxy, every call keeps mitmproxy's leg
            log.info("turnout: warm pool off in %s mode (calls go through the upstream proxy)", chained[0])
            self.warm_pool = "off"
        for rule in self.cfg.rules:
            for t in rule.targets:
                if not self.cfg.api_key(t.provider) and t.provider != rule.provider:
                    log.warning("turnout: failover target %s has no key (set [providers.%s] api_key_env to an "
                                "environment variable that holds one): it will be skipped", t, t.provider)  # fmt: skip
        self._restart()

    def _restart(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if not self.cfg.rules and self.warm_pool == "off":
            return
        ca = getattr(ctx.options, "ssl_verify_upstream_trusted_ca", None)
        verify: Any = False if getattr(ctx.options, "ssl_insecure", False) else (ca or True)
        self.relay = Relay(
            self.cfg,
            self._base_url,
            verify=verify,
            on_transition=self._transition,
            pool_size=ctx.options.turnout_warm_pool_size,
            http2=ctx.options.turnout_warm_pool_http2,
            on_response=self._answered,
        )
        self.in_pool.clear()
        self.relay.start()
        self.services.circuits = {name: "closed" for name in PROVIDERS}
        self.services.pool_in_use = lambda: len(self.in_pool)

    def _answered(self, http_version: str) -> None:
        """On the relay's thread: one provider answer on a pooled connection, by HTTP version (one writer)."""
        counts = self.services.pool_responses
        counts[http_version] = counts.get(http_version, 0) + 1

    def _base_url(self, provider: str) -> str:
        urls = self.services.upstream_urls
        return urls.get(provider) or urls.get("") or f"https://{PROVIDERS[provider].hosts[0]}"

    def _transition(self, provider: str, new: str) -> None:
        """A circuit changed state (on the relay's thread): console, events row, gauge."""
        self.services.circuits[provider] = new
        message = {
            "open": f"{provider} is failing: its calls go to their failover targets until a probe succeeds",
            "half_open": f"probing {provider}",
            "closed": f"{provider} answers again: its calls go to it",
        }[new]
        (log.warning if new == "open" else log.info)("turnout: failover: %s", message)
        self.services.event("circuit_" + new, None, message, {"provider": provider})

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        relay = self.relay
        if relay is None or not relay.running or flow.response or flow.error:
            return
        llm = state.get(flow)
        if llm is None or llm.served_locally or llm.endpoint is None or not isinstance(llm.body, dict):
            return
        fmt = FORMATS.get((llm.provider.name, llm.endpoint))
        rule = self.cfg.rule_for(llm.provider.name, llm.model) if fmt is not None else None
        if rule is None:
            if not self._warm(flow.client_conn.id):
                return
            if len(self.in_pool) >= relay.pool_size:
                # every pooled connection is carrying a call (streams can last minutes): this one takes
                # its client connection's own rather than queue behind them
                self.services.pool_overflow += 1
                return
        self.in_pool.add(flow.id)
        req = flow.request
        call = {
            "provider": llm.provider.name,
            "model": llm.model or "",
            "fmt": fmt or "openai",  # only read when the call is under a rule
            "stream": llm.stream,
            "json_array": llm.endpoint == "stream_json",
            "include_usage": bool((llm.body.get("stream_options") or {}).get("include_usage")),
            "target": f"{req.scheme}://{req.host}:{req.port}",
            "failover": rule is not None,
        }
        if llm.provider.name == "gemini":  # its streams carry usage whether asked or not: so do the translated ones
            call["include_usage"] = True
        req.headers[TOKEN] = relay.token
        req.headers[CALL] = json.dumps(call)
        req.scheme, req.host, req.port = "http", "127.0.0.1", relay.port
        if rule is not None:
            llm.columns["failover_tried"] = None

    def _warm(self, client: str) -> bool:
        """Whether the relay's warm pool should carry this call (a call under no failover rule)."""
        if self.warm_pool == "all":
            return True
        if self.warm_pool == "off" or client in self.own_upstream or client in self.relayed:
            return False
        self.relayed.add(client)
        return True

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        relay = self.relay
        if relay is not None and data.server.address != ("127.0.0.1", relay.port):
            self.own_upstream.add(data.client.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self.own_upstream.discard(client.id)
        self.relayed.discard(client.id)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        flow.request.headers.pop(TOKEN, None)  # what mitmweb keeps of the request
        flow.request.headers.pop(CALL, None)
        llm = state.get(flow)
        if flow.response is None:
            return
        gateway_error = flow.response.headers.pop(GATEWAY_ERROR, None)
        if llm is None:
            return
        if gateway_error:
            llm.gateway_error = gateway_error
        if "failover_tried" not in llm.columns:
            return
        headers = flow.response.headers
        tried = headers.get("x-turnout-failover-tried") or None
        answered = headers.get("x-turnout-failover")
        llm.columns["failover_tried"] = tried
        if answered:
            provider, _, model = answered.partition(":")
            llm.answered_by = provider
            llm.model = model
            llm.columns.update(
                provider=provider,
                model=model,
                failover_from=headers.get("x-turnout-failover-from"),
                failover_reason=headers.get("x-turnout-failover-reason") or None,
            )

    def response(self, flow: http.HTTPFlow) -> None:
        self.in_pool.discard(flow.id)  # a stream's response hook comes once it has ended

    def error(self, flow: http.HTTPFlow) -> None:
        self.in_pool.discard(flow.id)
        flow.request.headers.pop(TOKEN, None)  # a flow that failed keeps no relay token in mitmweb or a dump
        flow.request.headers.pop(CALL, None)

    def done(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
