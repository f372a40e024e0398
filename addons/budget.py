"""Budget: reserve each request's worst-case cost before it goes upstream; block, throttle or warn.

Runs after Cache (a hit costs nothing: no reservation, never blocked) and Breakers, right before
Forward. The policy is `turnout.ledger.budgets.BudgetBook`, pure and single-threaded like the
event loop that owns it: reserve here, settle with the real cost when Record finishes the row
(`llm.on_record`), release when the call failed before costing anything. Spend survives restarts:
the windows are rebuilt from the ledger when the config or ledger is (re)loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, exceptions, http

from turnout.ledger.budget_specs import parse_budgets
from turnout.ledger.budgets import BudgetBook, BudgetReservation, BudgetStatus
from turnout.ledger.request_size import max_output, worst_case
from turnout.ledger.breakers import parse_breakers
from turnout.ledger.shared_budgets import SharedBudgets, SharedReservation
from turnout.ledger.shared_state import StateUnavailable
from turnout.ledger.store import open_ledger
from turnout.router.tokens import preload

from . import config, state
from .guard import fail_closed
from .limits import flow_prompt_tokens, refuse, scope_props
from .services import Services

log = logging.getLogger(__name__)


class Budget:
    def __init__(self, services: Services | None = None, clock: Callable[[], float] = time.time) -> None:
        self.services = services or Services()
        self.clock = clock  # injected by tests: windows and throttles without sleeping
        self.book = BudgetBook()
        self.default_max_output = 4096
        self.shared: SharedBudgets | None = None  # the book's budgets counted in `services.state` (Redis)
        self._tasks: set = set()  # settlements in flight
        self._unsettled: list[tuple[SharedReservation, float | None, int]] = []  # failed while Redis was away

    def configure(self, updated: set[str]) -> None:
        if "turnout_config" in updated:
            try:
                specs = parse_budgets(config.load_config(ctx.options.turnout_config).get("budgets"))
                self.default_max_output = parse_breakers(
                    config.section(ctx.options.turnout_config, "breakers")
                ).default_max_output
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_config [[budgets]]: {e}") from None
            self.book = BudgetBook(specs)
            if specs:
                preload()  # ~0.3 s now rather than on a first request's worker thread
        store = self.services.state
        if store is not None and self.book.specs:
            if self.shared is None or self.shared.store is not store or self.shared.specs is not self.book.specs:
                self.shared = SharedBudgets(self.book.specs, store, lease=self.services.state_lease)
                if self._seed not in store.on_connect:  # a config reload must not seed twice
                    store.on_connect.append(self._seed)
            return  # the windows live in Redis: rebuilt from the ledger once per Redis lifetime (`_seed`)
        self.shared = None
        if updated & {"turnout_config", "turnout_db"} and self.book.specs:
            self.rebuild()

    async def _seed(self) -> None:
        """A cold Redis (restarted empty, or new) gets this instance's ledger spend added, once: the marker
        is per ledger file, so the workers sharing one ledger add it once between them."""
        import asyncio
        import hashlib
        import socket

        shared = self.shared
        if shared is None:
            return
        path = str(ctx.options.turnout_db)
        marker = shared.store.key(
            "seeded", hashlib.blake2b(f"{socket.gethostname()}:{path}".encode(), digest_size=8).hexdigest()
        )
        now = self.clock()

        def read() -> BudgetBook:
            book = BudgetBook(shared.specs)
            db = open_ledger(path)
            try:
                book.rebuild_from_ledger(db, now)
            finally:
                db.conn.close()
            return book

        book = await asyncio.to_thread(read)
        unsettled, self._unsettled = self._unsettled, []
        if await shared.store.seed(marker, shared.seed_entries(book, now)):
            # a cold Redis: the ledger, read just now, already holds the calls whose settlement failed
            log.info("turnout: shared budgets seeded from this ledger's spend (%d counter(s))", len(book.counters))
            return
        for res, usd, tokens in unsettled:  # Redis kept its data: settle what failed while it was away
            res.done = False
            await shared.settle(res, usd, tokens)

    def rebuild(self) -> None:
        """Refill the windows from the ledger, on a read connection of our own (not the writer's)."""
        try:
            db = open_ledger(ctx.options.turnout_db)
        except Exception as e:  # noqa: BLE001
            raise exceptions.OptionsError(f"turnout_db: cannot read ledger {ctx.options.turnout_db!r}: {e}") from None
        try:
            n = self.book.rebuild_from_ledger(db, self.clock())
        finally:
            db.conn.close()
        if n:
            log.info("turnout: budgets rebuilt from %d ledger row(s)", n)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        llm = state.get(flow)
        if llm is None or llm.endpoint is None or not self.book.specs:
            return
        props = scope_props(llm)
        usd, tokens = 0.0, 0
        if self.book.needs_estimate(props):
            prompt = await flow_prompt_tokens(flow, llm)
            output = max_output(llm.body, self.default_max_output)
            rates = self.services.prices.rates(llm.provider.name, llm.model)
            usd, tokens = worst_case(prompt, output, rates), prompt + output
            if flow.error or not flow.live:  # killed (mitmweb, shutdown) while we counted
                return
        now = self.clock()
        if self.shared is not None:
            try:
                res = await self.shared.reserve(props, usd, tokens, now, flow.id)
            except StateUnavailable as e:
                self._state_down(flow, llm, props, e)
                return
        else:
            res = self.book.reserve(props, usd, tokens, now)
        if res.blocked_by is not None:
            self._blocked(flow, llm, res.blocked_by)
            return
        if res.throttled_by is not None:
            st = res.throttled_by
            refuse(
                flow, llm, blocked_by=f"budget:{st.name}", type="requests", code="budget_throttled",
                message=f"turnout: throttled to {self._rpm(st.name)} requests/minute — {st.describe()}",
                retry_after=self._retry_after(st.name, props, now),
            )  # fmt: skip
            return
        if res.counters:
            llm.on_record.append(lambda row: self._settle(res, row))
        if res.alerts:
            llm.response_headers["x-turnout-budget"] = ", ".join(
                f"{st.name}={min(st.utilisation, 9.99):.0%}; state={st.state}" for st in res.alerts
            )
            llm.columns["budget_alerts"] = ", ".join(f"{st.name}:{min(st.utilisation, 9.99):.0%}" for st in res.alerts)
        for st in res.new_alerts:
            log.warning("turnout: budget alert: %s", st.describe())
            self.services.event("budget_alert", flow.id, st.describe(), st.as_dict())

    def _state_down(self, flow: http.HTTPFlow, llm: state.LLMFlow, props: dict[str, str | None], e: Exception) -> None:
        """The shared counters are unreachable: a budget whose policy is `closed` refuses (503, naming the cause);
        `open` ones admit the call uncounted (its row is still in the ledger, and a cold Redis re-reads it)."""
        assert self.shared is not None
        closed = [s.name for s, _ in self.shared.applicable(props) if s.on_state_error == "closed"]
        if closed:
            refuse(
                flow, llm, blocked_by=f"budget:{closed[0]}", type="turnout_state_unavailable",
                code="state_unavailable", status=503, retry_after=1,
                message=f"turnout: budget {closed[0]!r} cannot be checked: {e}",
            )  # fmt: skip
            return
        llm.columns["budget_alerts"] = "state unavailable: admitted uncounted"

    def _blocked(self, flow: http.HTTPFlow, llm: state.LLMFlow, st: BudgetStatus) -> None:
        refuse(
            flow, llm, blocked_by=f"budget:{st.name}", type="insufficient_quota", code="budget_exceeded",
            message=f"turnout: {st.describe()}",
        )  # fmt: skip
        counter = self.book.counters.get((st.name, st.scope_value)) if self.shared is None else None
        if counter is not None and not counter.blocked_logged:
            counter.blocked_logged = True
            log.warning("turnout: budget exhausted, blocking: %s", st.describe())
            self.services.event("budget_blocked", flow.id, st.describe(), st.as_dict())

    def _rpm(self, name: str) -> int | None:
        return next((s.throttle_rpm for s in self.book.specs if s.name == name), None)

    def _retry_after(self, name: str, props: dict[str, str | None], now: float) -> float | None:
        for c in self.book.applicable(props):
            if c.spec.name == name and c.admitted:
                return max(1.0, c.admitted[0] + 60 - now)
        return None

    def _settle(self, res: BudgetReservation | SharedReservation, row: dict[str, Any]) -> None:
        """Replace the reservation by the real cost, or give it back when no usage was reported (the call cost
        nothing we know of). Shared ones settle on the loop, off the call's path (Record is finishing the row)."""
        unknown = row.get("prompt_tokens") is None
        tokens = int(row.get("prompt_tokens") or 0) + int(row.get("completion_tokens") or 0)
        if not isinstance(res, SharedReservation):
            if unknown:
                self.book.release(res)
            else:
                self.book.settle(res, row.get("cost_usd"), tokens, self.clock())
            return
        import asyncio

        shared = self.shared
        if shared is None:
            return
        work = shared.release(res) if unknown else self._settle_or_keep(res, row.get("cost_usd"), tokens)
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    async def _settle_or_keep(self, res: SharedReservation, usd: float | None, tokens: int) -> None:
        assert self.shared is not None
        try:
            await self.shared.settle(res, usd, tokens)
        except StateUnavailable:
            self._unsettled.append((res, usd, tokens))  # settled when Redis is back (idempotent by flow id)
            raise

    def _settled(self, task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and isinstance(task.exception(), StateUnavailable):
            # the lease will give the reservation back; the spend is in the ledger for a cold Redis
            log.warning("turnout: budget settlement not recorded in shared state: %s", task.exception())
        elif not task.cancelled() and task.exception() is not None:
            log.error("turnout: budget settlement failed", exc_info=task.exception())

    async def done(self) -> None:
        import asyncio

        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
