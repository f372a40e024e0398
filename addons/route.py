"""Route: classify every request and decide whether a cheaper model would do.

`observe` (the default) decides and records what would have happened — task, score,
would_route_to, and the projected cost of the cheaper model from the real usage — but
forwards the request unchanged. `route` rewrites `model` in the forwarded body. `off` does
nothing. The decision itself is `turnout.router.policy.RoutingPolicy.decide`, a pure function.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy import server_hooks

from turnout.ledger.credentials import redact_path
from turnout.ledger.pricing import Usage
from turnout.ledger.queries import EVIDENCE_SQL
from turnout.ledger.store import open_ledger
from turnout.router.policy import DEFAULT_TARGET_QUALITY, RoutingPolicy
from turnout.router.quality import apply_evidence

from . import config, state
from .guard import fail_closed
from .services import Services

log = logging.getLogger(__name__)

# messages: Anthropic; generate / stream / stream_json: Gemini
ROUTABLE = frozenset({"chat", "responses", "completions", "messages", "generate", "stream", "stream_json"})
# Provider betas are switched on per model (e.g. Anthropic's 1M-token context); the policy decides which
# ones may still be routed ([router] allowed_betas).
BETA_HEADERS = ("anthropic-beta", "openai-beta")
REVERTED = "reverted: measured quality below target (shadow auto_revert)"


def request_betas(headers: dict[str, str]) -> list[str]:
    """The betas a request switches on: the comma-separated values of its beta headers."""
    return [b.strip() for h in BETA_HEADERS if h in headers for b in headers[h].split(",") if b.strip()]


class Route:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self.mode = "observe"
        self.policy: RoutingPolicy | None = None
        self.target = DEFAULT_TARGET_QUALITY
        # Per client connection: whether its upstream connection is up, and the observed flows whose
        # request waits for it to come up (keyed by client: turnout_upstream rewrites the destination
        # after this hook, so the flow's own server_conn says nothing about the connection it will use).
        self.upstream_up: set[str] = set()
        self.after_connect: dict[str, list[state.LLMFlow]] = {}

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_mode",
            str,
            "observe",
            "Routing: `observe` records what would be routed and the saving, `route` rewrites the model, `off` skips it.",
            choices=["observe", "route", "off"],
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"turnout_mode", "turnout_config"} or self.policy is None:
            try:
                table = dict(config.section(ctx.options.turnout_config, "router"))
                mode = table.pop("mode", None)  # the proxy's concern, not the policy's
                if mode is not None and mode not in ("observe", "route", "off"):
                    raise ValueError(f"mode must be observe, route or off, not {mode!r}")
                self.policy = RoutingPolicy.from_config(table)
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_config [router]: {e}") from None
            self.target = self.policy.target_quality or DEFAULT_TARGET_QUALITY
            updated = updated | {"turnout_db"}
            # an explicit --mode / --set turnout_mode wins over the config file's [router] mode
            explicit = ctx.options._options["turnout_mode"].has_changed()
            self.mode = mode if mode is not None and not explicit else ctx.options.turnout_mode
        if "turnout_db" in updated and self.policy is not None and self.policy.policy == "evidence":
            self._load_evidence(getattr(ctx.options, "turnout_db", ""))

    def _load_evidence(self, db_path: str) -> None:
        """The evidence policy starts from every verdict already in the ledger (then Shadow keeps it current)."""
        if not db_path:
            return
        try:
            db = open_ledger(db_path)
        except Exception as e:  # noqa: BLE001 - a ledger that cannot open is LedgerStore's to report
            log.warning("turnout: evidence policy: cannot read %s: %s", db_path, e)
            return
        try:
            for provider, reference, candidate, task, passed, decided in db.execute(EVIDENCE_SQL):
                self.services.evidence[(provider, reference, candidate, task)] = (int(passed or 0), int(decided or 0))
        finally:
            db.conn.close()

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        llm = state.get(flow)
        if llm is None or flow.response or flow.error or self.mode == "off" or self.policy is None:
            return
        if llm.endpoint not in ROUTABLE or not isinstance(llm.body, dict):
            return
        if self.mode == "observe" and flow.live:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                # Observing changes nothing that goes upstream, so classify while the provider works, not before
                # the request leaves; Record runs it first if the answer comes back sooner (a cache hit).
                llm.pending.append(lambda: self._decide(flow, llm))
                client = flow.client_conn.id
                if client in self.upstream_up:
                    # Two hops: mitmproxy sends the request one loop step after this hook returns (the hook
                    # runs under its server-event lock), and one call_soon would still run before that send.
                    loop.call_soon(loop.call_soon, state.run_pending, llm)
                else:  # a new upstream connection (lazy): the request leaves once it is up, not during the dial
                    # (flows answered meanwhile without one — cache hits — were run by Record: dropped here)
                    waiting = [w for w in self.after_connect.get(client, ()) if w.pending]
                    waiting.append(llm)
                    self.after_connect[client] = waiting
                return
        self._decide(flow, llm)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.upstream_up.add(data.client.id)
        waiting = self.after_connect.pop(data.client.id, None)
        if waiting:  # mitmproxy sends the request right after this hook, then these run
            loop = asyncio.get_running_loop()
            for llm in waiting:
                loop.call_soon(loop.call_soon, state.run_pending, llm)

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.upstream_up.discard(data.client.id)  # the next request dials again

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.after_connect.pop(data.client.id, None)  # Record runs their pending work when it records them

    def client_disconnected(self, client: connection.Client) -> None:
        self.upstream_up.discard(client.id)
        self.after_connect.pop(client.id, None)

    def _decide(self, flow: http.HTTPFlow, llm: state.LLMFlow) -> None:
        assert self.policy is not None
        d = self.policy.decide(
            llm.body,
            provider=llm.provider.name,
            api_key_fp=llm.api_key_fp,
            feature=llm.columns.get("feature"),
            betas=request_betas(llm.headers),
            model=llm.requested_model,
            template=llm.columns.get("template_fp"),
        )
        llm.cheaper_model = d.candidate
        if d.decision == "route" and d.would_route_to and self.services.reverted:
            group = (llm.provider.name, llm.requested_model or "", d.would_route_to, d.task)
            if group in self.services.reverted:  # Shadow measured this group below target (auto_revert)
                d = dataclasses.replace(d, decision="keep", would_route_to=None, reason=REVERTED)
        if self.policy.policy == "evidence" and d.candidate and d.reason != REVERTED:
            # a reverted group stays kept until Shadow sees it recover: its whole history must not undo that
            group = (llm.provider.name, llm.requested_model or "", d.candidate, d.task)
            d = apply_evidence(d, self.services.evidence.get(group), self.target)
        llm.columns.update(
            task=d.task,
            score=None if d.score is None else round(d.score, 4),
            decision=d.decision,
            would_route_to=d.would_route_to,
            route_reason=d.reason,
        )
        llm.response_headers["x-turnout-task"] = d.task
        llm.response_headers["x-turnout-decision"] = d.decision if self.mode == "route" else f"observe:{d.decision}"
        if d.decision != "route" or not d.would_route_to:
            return
        requested = llm.requested_model
        llm.on_record.append(lambda row: self._counterfactual(row, llm, "baseline_cost_usd", requested))
        if self.mode == "route":
            path = llm.provider.with_model(llm.endpoint, llm.body, flow.request.path, d.would_route_to)
            if path != flow.request.path:  # Gemini names the model in the path
                flow.request.path = path
                llm.path = redact_path(path)
            llm.model = d.would_route_to
            llm.body_changed = True
            llm.columns["routed"] = 1
            llm.response_headers["x-turnout-routed-from"] = llm.requested_model or ""
        else:
            target = d.would_route_to
            llm.on_record.append(lambda row: self._counterfactual(row, llm, "projected_cost_usd", target))

    def _counterfactual(self, row: dict[str, Any], llm: state.LLMFlow, column: str, model: str | None) -> None:
        """Price the same token usage on another model: the requested one (baseline) or the cheaper one (projected)."""
        if row.get("prompt_tokens") is None or row.get("cache") in ("hit", "replay"):
            return  # a cache hit costs nothing on any model: routing it would save nothing
        usage = Usage(*(row.get(k) or 0 for k in Usage._fields))
        row[column] = self.services.prices.cost(llm.provider.name, model, usage)
