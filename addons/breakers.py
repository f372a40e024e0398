"""Breakers: the retry-loop breaker, the output cap and the spike limiter, right before Budget.

Each one answers 429 in the provider's error shape (or, for the cap, rewrites the body) and
says so in the ledger (`blocked_by` = loop | spike, `clamped`) and in mitmweb (a marked flow).
The logic is pure (`turnout.ledger.breakers`: LoopDetector, SpikeLimiter, clamp_output).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mitmproxy import ctx, exceptions, http

from turnout.ledger.breakers import (
    BreakerConfig,
    LoopDetector,
    SpikeLimiter,
    clamp_output,
    parse_breakers,
    request_fingerprint,
)
from turnout.ledger.request_size import max_output
from turnout.ledger.shared_state import StateUnavailable
from turnout.router.tokens import preload

from . import config, state
from .guard import fail_closed
from .limits import flow_prompt_tokens, refuse, scope_props
from .services import Services

log = logging.getLogger(__name__)


class Breakers:
    def __init__(self, services: Services | None = None, clock: Callable[[], float] = time.time) -> None:
        self.services = services or Services()  # `state`: loop counts and spike buckets shared with other instances
        self.clock = clock  # injected by tests: loop windows and buckets without sleeping
        self.config = BreakerConfig()
        self.loops = LoopDetector(0, 0)
        self.spikes = SpikeLimiter(())

    def configure(self, updated: set[str]) -> None:
        if "turnout_config" in updated:
            try:
                cfg = parse_breakers(config.section(ctx.options.turnout_config, "breakers"))
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_config [breakers]: {e}") from None
            self.config = cfg
            self.loops = LoopDetector(cfg.loop_threshold, cfg.loop_window)
            self.spikes = SpikeLimiter(cfg.spikes)
            if cfg.spikes:
                preload()  # spike limits count every prompt

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        llm = state.get(flow)
        if llm is None or llm.endpoint is None or not isinstance(llm.body, dict):
            return
        now = self.clock()
        cfg = self.config
        store = self.services.state
        try:
            looping = self.loops.enabled and await self._loop_hit(store, llm, now)
        except StateUnavailable as e:
            if self._state_down(flow, llm, e):
                return
            looping = False
        if looping:
            log.warning("turnout: retry loop from key %s on %s: refused", llm.api_key_fp, llm.path)
            refuse(
                flow, llm, blocked_by="loop", type="requests", code="loop_detected",
                message=(
                    f"turnout: the same request was sent more than {cfg.loop_threshold} times within "
                    f"{cfg.loop_window:g}s; refused until the client calms down"
                ),
            )  # fmt: skip
            return
        cap = cfg.cap_for(llm.columns.get("feature"))
        change = clamp_output(llm.endpoint, llm.body, cap, when_unset=cfg.cap_when_unset)
        if change:
            llm.body_changed = True
            llm.columns["clamped"] = change
            llm.response_headers["x-turnout-clamped"] = change
        if self.spikes.specs:
            tokens = await flow_prompt_tokens(flow, llm) + max_output(llm.body, cfg.default_max_output)
            if flow.error or not flow.live:  # killed (mitmweb, shutdown) while we counted
                return
            try:
                refused = await self._spike(store, scope_props(llm), tokens)
            except StateUnavailable as e:
                if self._state_down(flow, llm, e):
                    return
                refused = None
            if refused is not None:
                spec, value, wait = refused
                who = "" if spec.scope == "global" else f" for {spec.scope} {value}"
                limits = ", ".join(f"{r:g} {k}" for k, r in (("requests/min", spec.rpm), ("tokens/min", spec.tpm)) if r)
                refuse(
                    flow, llm, blocked_by="spike", type="requests", code="rate_limited",
                    message=f"turnout: spike limit{who} ({limits}); retry in {wait:.1f}s",
                    retry_after=wait,
                )  # fmt: skip

    async def _loop_hit(self, store, llm: state.LLMFlow, now: float) -> bool:
        fingerprint = request_fingerprint(llm.endpoint, llm.body)
        if store is None:
            return self.loops.hit(llm.api_key_fp, fingerprint, now)
        count = await store.loop_count(f"{llm.api_key_fp or '-'}:{fingerprint}", self.loops.window, f"{now}:{id(llm)}")
        return count > self.loops.threshold

    async def _spike(self, store, props: dict[str, str | None], tokens: int):
        if store is None:
            return self.spikes.check(props, tokens, self.clock())
        buckets = self.spikes.buckets_for(props, tokens)
        if not buckets:
            return None
        keys = [(f"{i}:{kind}:{value}", rate, amount) for i, _, value, kind, rate, amount in buckets]
        i, wait = await store.spike(keys)
        if i == 0:
            return None
        _, spec, value, *_ = buckets[i - 1]
        return spec, value, wait

    def _state_down(self, flow: http.HTTPFlow, llm: state.LLMFlow, e: Exception) -> bool:
        """Shared counters unreachable: `on_state_error = "closed"` refuses (True), "open" admits unchecked."""
        if self.config.on_state_error != "closed":
            return False
        refuse(
            flow, llm, blocked_by="breakers", type="turnout_state_unavailable", code="state_unavailable",
            status=503, retry_after=1, message=f"turnout: the breakers cannot be checked: {e}",
        )  # fmt: skip
        return True
