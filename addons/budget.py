"""Budget: reserve each request's worst-case cost before it goes upstream; block, throttle or warn.

Runs after Cache (a hit costs nothing: no reservation, never blocked) and Breakers, right before
Forward. The policy is `turnout.ledger.budgets.BudgetBook`, pure and single-threaded like the
event loop that owns it: reserve here, settle with the real cost when Record finishes the row
(`llm.on_record`), release when the call failed before costing anything. Spend survives restarts:
the windows are rebuilt from the ledger when the config or ledger is (re)loaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from mitmproxy import ctx, exceptions, http

from turnout.ledger.budgets import (
    BudgetBook,
    BudgetReservation,
    BudgetStatus,
    max_output,
    message_overhead,
    parse_budgets,
    prompt_text,
    worst_case,
)
from turnout.ledger.breakers import parse_breakers
from turnout.ledger.store import iso_utc, open_ledger
from turnout.router.tokens import count_tokens, is_loaded, preload

from . import config, state
from .guard import fail_closed

log = logging.getLogger(__name__)

PROMPT_TOKENS = "turnout_prompt_tokens"  # flow.metadata: the prompt as counted for this flow
# BPE costs ~0.17 ms per 1k tokens (~11 ms for a 63k-token prompt). Longer prompts are counted
# on a worker thread (tiktoken releases the GIL) so one big request never stalls the event loop.
INLINE_COUNT_CHARS = 16_384


def scope_props(llm: state.LLMFlow) -> dict[str, str | None]:
    """The values a request has for each budget / breaker scope."""
    cols = llm.columns
    return {
        "key": llm.api_key_fp,
        "team": cols.get("team"),
        "feature": cols.get("feature"),
        "user": cols.get("user"),
        "model": llm.model,
    }


async def flow_prompt_tokens(flow: http.HTTPFlow, llm: state.LLMFlow) -> int:
    """The request's prompt tokens in the encoding of the model it goes to, counted in full once per
    flow (Breakers and Budget both need them)."""
    n = flow.metadata.get(PROMPT_TOKENS)
    if n is None:
        text, messages = prompt_text(llm.body)
        model = llm.model
        if len(text) > INLINE_COUNT_CHARS or not is_loaded(model):  # nor stall the loop loading an encoding
            counted = await asyncio.to_thread(count_tokens, text, model)
        else:
            counted = count_tokens(text, model)
        n = flow.metadata[PROMPT_TOKENS] = counted + message_overhead(messages)
    return n


def refuse(
    flow: http.HTTPFlow,
    llm: state.LLMFlow,
    *,
    blocked_by: str,
    type: str,
    code: str,
    message: str,
    retry_after: float | None = None,
) -> None:
    """Answer 429 in the provider's error shape; the request never reaches the provider."""
    headers = {"x-turnout-blocked-by": blocked_by}
    if retry_after is not None and math.isfinite(retry_after):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    else:
        headers["x-should-retry"] = "false"  # the SDKs would otherwise retry a 429 that cannot pass
    llm.served_locally = True
    llm.columns["blocked_by"] = blocked_by
    flow.response = state.json_response(
        429, llm.provider.error_body(status=429, message=message, type=type, code=code), headers
    )


def submit_event(kind: str, flow_id: str | None, message: str, data: Any) -> None:
    record = ctx.master.addons.get("record")
    if record is not None and record.writer is not None:
        record.writer.submit(
            "events",
            {"at": iso_utc(time.time()), "kind": kind, "flow_id": flow_id, "message": message, "data": json.dumps(data, default=str)},
        )


class Budget:
    def __init__(self) -> None:
        self.book = BudgetBook()
        self.default_max_output = 4096

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
        if updated & {"turnout_config", "turnout_db"} and self.book.specs:
            self.rebuild()

    def rebuild(self) -> None:
        """Refill the windows from the ledger, on a read connection of our own (not the writer's)."""
        try:
            db = open_ledger(ctx.options.turnout_db)
        except Exception as e:  # noqa: BLE001
            raise exceptions.OptionsError(f"turnout_db: cannot read ledger {ctx.options.turnout_db!r}: {e}") from None
        try:
            n = self.book.rebuild_from_ledger(db, time.time())
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
            record = ctx.master.addons.get("record")
            rates = record.prices.rates(llm.provider.name, llm.model) if record is not None else None
            usd, tokens = worst_case(prompt, output, rates), prompt + output
            if flow.error or not flow.live:  # killed (mitmweb, shutdown) while we counted
                return
        now = time.time()
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
            submit_event("budget_alert", flow.id, st.describe(), st.as_dict())

    def _blocked(self, flow: http.HTTPFlow, llm: state.LLMFlow, st: BudgetStatus) -> None:
        refuse(
            flow, llm, blocked_by=f"budget:{st.name}", type="insufficient_quota", code="budget_exceeded",
            message=f"turnout: {st.describe()}",
        )  # fmt: skip
        counter = self.book.counters.get((st.name, st.scope_value))
        if counter is not None and not counter.blocked_logged:
            counter.blocked_logged = True
            log.warning("turnout: budget exhausted, blocking: %s", st.describe())
            submit_event("budget_blocked", flow.id, st.describe(), st.as_dict())

    def _rpm(self, name: str) -> int | None:
        return next((s.throttle_rpm for s in self.book.specs if s.name == name), None)

    def _retry_after(self, name: str, props: dict[str, str | None], now: float) -> float | None:
        for c in self.book.applicable(props):
            if c.spec.name == name and c.admitted:
                return max(1.0, c.admitted[0] + 60 - now)
        return None

    def _settle(self, res: BudgetReservation, row: dict[str, Any]) -> None:
        if row.get("prompt_tokens") is None:  # no usage reported: the call cost nothing we know of
            self.book.release(res)
            return
        tokens = int(row.get("prompt_tokens") or 0) + int(row.get("completion_tokens") or 0)
        self.book.settle(res, row.get("cost_usd"), tokens, time.time())
