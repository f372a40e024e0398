"""SharedState: `turnout_state = redis://…` puts budgets, spike buckets, loop counters and the cache index
in one Redis that every instance (and every worker) uses; empty keeps them in this process.

This addon only owns the connection (`services.state`, a `turnout.ledger.shared_state.RedisState`):
Budget, Breakers and Cache use it, each with its own policy for when it is down. Going down and coming
back are logged, written as `events` rows (`state_unavailable`, `state_recovered`) and exported
(`turnout_state_up`, `turnout_state_errors`).
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions

from turnout.ledger.shared_state import RedisState

from . import config
from .services import Services

log = logging.getLogger(__name__)


class SharedState:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_state", str, "",
            "Shared state for several instances: redis://HOST:PORT/DB (budgets, limits, loop counters, cache). "
            "Empty: kept in this process.",
        )  # fmt: skip
        loader.add_option(
            "turnout_state_timeout_ms",
            int,
            500,
            "Longest a request waits on the shared state before its policy applies.",
        )
        loader.add_option(
            "turnout_state_lease", int, 900,
            "Seconds a budget reservation is held for a call in flight: if its instance dies, the lease frees it.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if not updated & {"turnout_state", "turnout_state_timeout_ms", "turnout_state_lease", "turnout_config"}:
            return
        current = self.services.state
        url = config.configured_url(updated, "turnout_state", "state", current.url if current else "")
        if url is None:
            return  # the config changed, but not where the state is
        if ctx.options.turnout_state_timeout_ms <= 0 or ctx.options.turnout_state_lease <= 0:
            raise exceptions.OptionsError("turnout_state_timeout_ms and turnout_state_lease must be above 0")
        if not url:
            self.services.state = None
            return
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise exceptions.OptionsError(f"turnout_state: expected redis://HOST:PORT/DB (or rediss://), got {url!r}")
        try:
            self.services.state = RedisState(
                url, timeout=ctx.options.turnout_state_timeout_ms / 1000, on_change=self._changed
            )
        except (ImportError, ValueError) as e:
            raise exceptions.OptionsError(f"turnout_state: {e}") from None
        self.services.state_lease = float(ctx.options.turnout_state_lease)

    async def running(self) -> None:
        if self.services.state is not None:
            await self.services.state.connect()

    def _changed(self, healthy: bool, reason: str) -> None:
        st = self.services.state
        where = st.safe_url if st else "?"
        if healthy:
            self.services.event("state_recovered", None, f"shared state {where} is back", {"url": where})
        else:
            self.services.event(
                "state_unavailable",
                None,
                f"shared state {where} unavailable: {reason}",
                {"url": where, "reason": reason},
            )

    async def done(self) -> None:
        if self.services.state is not None:
            await self.services.state.close()
