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
from turnout.router.tokens import preload

from . import config, state
from .guard import fail_closed
from .limits import flow_prompt_tokens, refuse, scope_props

log = logging.getLogger(__name__)


class Breakers:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
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
        if self.loops.enabled and self.loops.hit(llm.api_key_fp, request_fingerprint(llm.endpoint, llm.body), now):
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
            refused = self.spikes.check(scope_props(llm), tokens, self.clock())
            if refused is not None:
                spec, value, wait = refused
                who = "" if spec.scope == "global" else f" for {spec.scope} {value}"
                limits = ", ".join(f"{r:g} {k}" for k, r in (("requests/min", spec.rpm), ("tokens/min", spec.tpm)) if r)
                refuse(
                    flow, llm, blocked_by="spike", type="requests", code="rate_limited",
                    message=f"turnout: spike limit{who} ({limits}); retry in {wait:.1f}s",
                    retry_after=wait,
                )  # fmt: skip
