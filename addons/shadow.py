"""Shadow: quality evidence for routing decisions, measured on the team's own traffic.

Observe mode: for a sample of the calls the router would route (and a smaller one of those it would
keep), once the call is answered and recorded, turnout sends the same request to the cheaper model
itself — same provider, same credentials (held in memory for that one call, never stored), not
streamed — and compares the two answers (router/comparators.py; free text goes to the judge,
router/judge.py). Route mode: routed calls are shadowed the other way round (the requested model
behind the routed answer), a rolling pass rate per group is kept, and a group whose measured quality
falls below target raises an event, a gauge and — with `auto_revert` — stops being routed.

Nothing here is on the client's path: the request hook only copies what a shadow would need (for
the sampled few), the row callback only decides and hands the job to the outbound thread
(addons/outbound.py). Every shadow and judge call reserves its worst case against the daily cap
first; what fails, times out, is refused or does not fit is recorded as `unknown` with its reason.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy import hooks as mitm_hooks

from turnout.ledger.daily_cap import DailyCap
from turnout.ledger.keys import key_fingerprint
from turnout.ledger.messages import text_of
from turnout.ledger.own_calls import own_call_row
from turnout.ledger.providers import PROVIDERS
from turnout.ledger.request_size import max_output
from turnout.ledger.store import iso_utc, open_ledger
from turnout.router import judge
from turnout.router.comparators import Said, Verdict, compare, said
from turnout.router.eligibility import SHADOWABLE, answer_block, request_block
from turnout.router.policy import DEFAULT_TARGET_QUALITY, target_quality
from turnout.router.quality import RollingQuality
from turnout.router.shadow_config import ShadowConfig, parse_shadow

from . import config, state
from .outbound import Outbound, Reply
from .route import REVERTED
from .services import Services

log = logging.getLogger(__name__)

OPT_OUT = "x-turnout-shadow"
# Headers a shadow call does not repeat: hop-by-hop, framing, turnout's own, and what would make the
# answer differ in encoding rather than content.
_DROP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-authorization",
     "proxy-connection", "te", "upgrade", "accept-encoding", "cookie", "expect", "idempotency-key"}
)  # fmt: skip
_OUTPUT_FIELD = {"chat": "max_completion_tokens", "completions": "max_tokens", "messages": "max_tokens",
                 "responses": "max_output_tokens"}  # fmt: skip
JUDGE_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
JUDGE_HOSTS = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}
JUDGE_MAX_TOKENS = 16
QUALITY_EVENTS_SQL = (
    "select kind, data from events where kind in ('quality_degraded', 'quality_recovered') order by at, rowid"
)


@dataclass
class Capture:
    """What a sampled request would need to be sent again: held in memory until its shadow is done."""

    draw: float
    url: str
    headers: dict[str, str]


@dataclass
class Job:
    flow: http.HTTPFlow
    llm: state.LLMFlow
    row: dict[str, Any]
    capture: Capture
    mode: str  # observe | monitor
    decision: str  # route | keep
    reference_model: str
    candidate_model: str
    known: Any  # the answer the client got (the reference in observe mode, the candidate in monitor mode)
    outbound: Any = None  # the Outbound and DailyCap the job started with (a reconfigure replaces both)
    cap: Any = None


def group_key(row: dict[str, Any], reference: str, candidate: str) -> tuple[str, str, str, str]:
    return (row.get("provider") or "", reference, candidate, row.get("task") or "?")


class Shadow:
    def __init__(
        self, services: Services | None = None, clock: Callable[[], float] = time.time, rng=random.random
    ) -> None:
        self.services = services or Services()
        self.clock, self.rng = clock, rng
        self.cfg = ShadowConfig()
        self.target = DEFAULT_TARGET_QUALITY
        self.cap = DailyCap(self.cfg.usd_per_day)
        self.outbound: Outbound | None = None
        self.store_bodies = True
        self.seen_models: dict[tuple[str, str], set[tuple[str | None, str | None]]] = {}
        self.upstream_base: str | None = None
        self._main_loop: Any = None
        self.vcr = False  # recording or replaying (turnout run --record / --replay)

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_shadow",
            bool,
            True,
            "Shadow evaluations: measure the quality of routing decisions by sending a sample of calls to the "
            "other model too ([shadow] in the config; off: --set turnout_shadow=false).",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"turnout_config", "turnout_shadow", "turnout_record", "turnout_replay"}:
            try:
                path = getattr(ctx.options, "turnout_config", "")
                self.cfg = parse_shadow(config.section(path, "shadow"))
                router = config.section(path, "router")
            except ValueError as e:
                raise exceptions.OptionsError(f"turnout_config {e}") from None
            updated = updated | {"turnout_db"}  # today's spend and the quality state, for the new cap
            self.target = target_quality(router)
            self.vcr = bool(getattr(ctx.options, "turnout_record", False) or getattr(ctx.options, "turnout_replay", ""))
            if not ctx.options.turnout_shadow or self.vcr:
                # off by the user, or while recording / replaying a test suite's calls: a recording holds
                # exactly the calls the suite made, and a replay makes none
                self.cfg = ShadowConfig(enabled=False)
            if self.cfg.judge_api_key_env and not os.environ.get(self.cfg.judge_api_key_env):
                raise exceptions.OptionsError(
                    f"turnout_config [shadow] judge_api_key_env: {self.cfg.judge_api_key_env} is not set in the "
                    "proxy's environment"
                )
            self.cap = DailyCap(self.cfg.usd_per_day)
            self._restart_outbound()
        if "turnout_store_bodies" in updated:
            self.store_bodies = ctx.options.turnout_store_bodies
        if "turnout_upstream" in updated:
            self.upstream_base = ctx.options.turnout_upstream.rstrip("/") or None
        if "turnout_db" in updated and getattr(ctx.options, "turnout_db", ""):
            self._rebuild_spend(ctx.options.turnout_db)

    def _restart_outbound(self) -> None:
        if self.outbound is not None:
            self.outbound.close()
            self.outbound = None
        if self.cfg.enabled:
            ca = getattr(ctx.options, "ssl_verify_upstream_trusted_ca", None)
            insecure = getattr(ctx.options, "ssl_insecure", False)
            verify: Any = False if insecure else (ca or True)
            self.outbound = Outbound(concurrency=self.cfg.concurrency, max_queued=self.cfg.max_queued, verify=verify)
            self.outbound.start()

    def _rebuild_spend(self, db_path: str) -> None:
        """Today's shadow and judge spend, from before a restart: the cap is per day, not per process."""
        now = self.clock()
        self.cap = DailyCap(self.cfg.usd_per_day)
        try:
            db = open_ledger(db_path)
        except Exception:  # noqa: BLE001 - the ledger's own addon reports a ledger that cannot open
            return
        try:
            start = iso_utc(now - now % 86400)
            (spent,) = db.execute(
                "select coalesce(sum(cost_usd), 0) from flows where origin is not null and started_at >= ?", [start]
            ).fetchone()
            quality_events = db.execute(QUALITY_EVENTS_SQL).fetchall()
        finally:
            db.conn.close()
        self.cap.add_spent(float(spent or 0), now)
        self._restore_quality_state(quality_events)

    def _restore_quality_state(self, events: list[tuple[str, str]]) -> None:
        """Degraded and reverted groups survive a restart: the last quality event of each group says which
        it is (a reverted group must not be routed again just because the process restarted)."""
        last: dict[tuple[str, str, str, str], tuple[str, dict[str, Any]]] = {}
        for kind, data in events:
            try:
                d = json.loads(data)
                key = (str(d["provider"]), str(d["reference"]), str(d["candidate"]), str(d["task"]))
            except (TypeError, ValueError, KeyError):
                continue
            last[key] = (kind, d)
        for key, (kind, d) in last.items():
            if kind == "quality_degraded":
                self.services.degraded.add(key)
                if d.get("reverted"):
                    self.services.reverted.add(key)
            else:
                self.services.degraded.discard(key)
                self.services.reverted.discard(key)
        if self.services.reverted:
            log.warning(
                "turnout: %d routing group(s) stay reverted from before the restart (measured quality below target)",
                len(self.services.reverted),
            )

    def running(self) -> None:
        import asyncio

        self._main_loop = asyncio.get_running_loop()
        c = self.cfg
        if not c.enabled:
            if self.vcr:
                print("turnout: shadow evaluations off while recording or replaying", flush=True)
            return
        judge_line = f"judge {c.judge_model}" if c.judge_model else "no judge (free-text verdicts: unknown)"
        print(
            f"turnout: shadow evaluations on — {c.sample:.0%} of would-route / routed calls and {c.explore:.0%} of "
            f"kept calls sent to the other model too, capped at ${c.usd_per_day:g}/day, {judge_line}; "
            "off: [shadow] enabled = false or --set turnout_shadow=false",
            flush=True,
        )

    # -- the request path: sample, and for the sampled few copy what a shadow needs ------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.cfg.enabled or self.outbound is None or flow.response or flow.error or self.services.draining:
            return
        llm = state.get(flow)
        if llm is None or llm.endpoint not in SHADOWABLE or not isinstance(llm.body, dict):
            return
        llm.on_record.append(lambda row: self._model_seen(flow, llm, row))
        draw = self.rng()
        if draw >= max(self.cfg.sample, self.cfg.explore):
            return
        if llm.headers.get(OPT_OUT, "").strip().lower() in ("no", "off", "false", "0"):
            return
        req = flow.request
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _DROP_HEADERS}
        capture = Capture(draw, req.url, headers)
        llm.on_record.append(lambda row: self._recorded(flow, llm, row, capture))

    # -- the recorded row: decide, and hand the job over -------------------------------------------

    def _recorded(self, flow: http.HTTPFlow, llm: state.LLMFlow, row: dict[str, Any], capture: Capture) -> None:
        job = self._job(flow, llm, row, capture)
        if job is None:
            return
        if answer_block(row) is not None or row.get("feature") in self.cfg.never_features:
            return  # never shadowed (the request itself is checked on the outbound thread)
        job.outbound, job.cap = self.outbound, self.cap
        if self.services.draining or self.outbound is None or not self.outbound.submit(lambda: self._run(job)):
            self._count("dropped")
            log.debug("turnout: shadow of %s dropped (draining or queue full)", flow.id)

    def _job(self, flow: http.HTTPFlow, llm: state.LLMFlow, row: dict[str, Any], capture: Capture) -> Job | None:
        requested, sent = llm.requested_model, llm.model
        if not requested or not sent:
            return None
        if row.get("routed") == 1:
            if capture.draw >= self.cfg.sample:
                return None
            return Job(flow, llm, row, capture, "monitor", "route", requested, sent, llm.response_json)
        decision = row.get("decision")
        if decision == "route" and row.get("would_route_to") and capture.draw < self.cfg.sample:
            return Job(flow, llm, row, capture, "observe", "route", sent, row["would_route_to"], llm.response_json)
        reverted = row.get("route_reason") == REVERTED  # evidence for a reverted group to recover on
        rate = self.cfg.sample if reverted else self.cfg.explore
        if decision == "keep" and llm.cheaper_model and capture.draw < rate:
            return Job(flow, llm, row, capture, "observe", "keep", sent, llm.cheaper_model, llm.response_json)
        return None

    # -- on the outbound thread ----------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        llm, row = job.llm, job.row
        provider = llm.provider
        if request_block(llm.endpoint, llm.body) is not None:
            return  # stateful or side effects: never sent again, and nothing to compare
        other = job.candidate_model if job.mode == "observe" else job.reference_model
        body = dict(llm.body)  # only top-level keys change: no deep copy of a request's images
        body["model"] = other
        body.pop("stream_options", None)
        body["stream"] = False
        if llm.endpoint == "responses":
            body["store"] = False  # the Responses API stores by default: a shadow leaves nothing behind
        field = _OUTPUT_FIELD.get(llm.endpoint or "")
        cap_set = False
        if field and max_output(body, -1) < 0:
            body[field] = self.cfg.max_output
            cap_set = True
        prompt = int(row.get("prompt_tokens") or 0)
        started = time.time()
        eval_row: dict[str, Any] = {
            "flow_id": row.get("id"),
            "started_at": iso_utc(started),
            "mode": job.mode,
            "decision": job.decision,
            "provider": provider.name,
            "reference_model": job.reference_model,
            "candidate_model": job.candidate_model,
            "task": row.get("task"),
            "feature": row.get("feature"),
            "template_fp": row.get("template_fp"),
        }
        rates = self.services.prices.rates(provider.name, other)
        if rates is None:
            return self._finish(
                job, eval_row, Verdict("unknown", "none", f"{other} has no known price: the cap cannot bound it")
            )
        # a cold prompt cache on the other model is written at up to 2x the input rate (Anthropic)
        worst = rates.worst_case(
            prompt * (2 if provider.name == "anthropic" else 1), max_output(body, self.cfg.max_output)
        )
        reply = await self._call(
            job, "shadow", job.capture.url, job.capture.headers, body, other, provider, worst, started
        )
        if reply is None:
            return self._finish(
                job, eval_row, Verdict("unknown", "none", f"daily cap of ${self.cfg.usd_per_day:g} reached")
            )
        reply, cost = reply
        eval_row["cost_usd"], eval_row["latency_ms"] = cost, round(reply.latency_ms, 3)
        if reply.error is not None or not isinstance(reply.body, dict):
            return self._finish(job, eval_row, Verdict("unknown", "none", f"shadow call failed: {reply.error}"))
        fetched = reply.body
        reference, candidate = (job.known, fetched) if job.mode == "observe" else (fetched, job.known)
        if self.store_bodies:
            eval_row["candidate_response"] = json.dumps(candidate, ensure_ascii=False)
        try:
            ref_said = said(
                provider.answer_parts(llm.endpoint, reference), provider.finish_reason(llm.endpoint, reference)
            )
            cand_said = said(
                provider.answer_parts(llm.endpoint, candidate), provider.finish_reason(llm.endpoint, candidate)
            )
            verdict = compare(llm.body, ref_said, cand_said, task=row.get("task"), tool_args=self.cfg.tool_args)
            if verdict is not None and verdict.comparator == "finish" and cap_set and job.mode == "observe":
                verdict = Verdict("unknown", "finish", f"cut at turnout's own max_output {self.cfg.max_output}")
            if verdict is None:
                verdict = await self._judge(job, eval_row, ref_said, cand_said)
        except Exception as e:  # noqa: BLE001 - a comparator bug costs the verdict, never the row
            log.exception("turnout: comparing the shadow of %s failed", row.get("id"))
            verdict = Verdict("unknown", "none", f"comparison failed: {type(e).__name__}: {e}"[:200])
        self._finish(job, eval_row, verdict)

    async def _call(
        self, job: Job, origin: str, url: str, headers: dict[str, str], body: Any, model: str, provider: Any,
        worst: float, started: float, key_fp: str | None = None,
    ) -> tuple[Reply, float] | None:  # fmt: skip
        """One of turnout's own calls: reserve its worst case, send, settle, record its row. None: over the cap.
        A call whose cost cannot be known (no usage: a timeout, a cut, a shutdown) settles at its worst case —
        the provider may well have billed it."""
        res = job.cap.reserve(worst, time.time())
        if res is None:
            return None
        endpoint = JUDGE_ENDPOINT[provider.name] if origin == "judge" else (job.llm.endpoint or "chat")
        reply: Reply | None = None
        usage: Any = None
        cost: float | None = None
        try:
            reply = await job.outbound.post_json(url, headers, body, self.cfg.timeout)
            usage = provider.response_usage(endpoint, reply.body) if reply.error is None else None
            if usage is not None:
                cost = self.services.prices.cost(provider.name, provider.response_model(reply.body) or model, usage)
                if cost is None:
                    cost = self.services.prices.cost(provider.name, model, usage)
            return reply, (worst if cost is None else cost)
        except BaseException as e:
            reply = Reply(None, None, f"turnout shut down before the call ended ({type(e).__name__})", 0.0)
            raise
        finally:
            spent = worst if cost is None else cost
            job.cap.settle(res, spent)
            if reply is not None:
                self._own_row(
                    origin,
                    job,
                    url,
                    model,
                    started,
                    reply,
                    body,
                    usage if cost is not None else None,
                    spent,
                    provider=provider,
                    endpoint=endpoint,
                    key_fp=key_fp,
                )

    async def _judge(self, job: Job, eval_row: dict[str, Any], ref: Said, cand: Said) -> Verdict:
        c = self.cfg
        if not c.judge_model:
            return Verdict("unknown", "none", "free text, and no [shadow] judge_model configured")
        llm = job.llm
        name = c.judge_provider or llm.provider.name
        provider = PROVIDERS[name]
        key_fp: str | None = None
        if name == llm.provider.name:
            headers = dict(job.capture.headers)
            base = _base_url(job.capture.url)
        else:
            key = os.environ.get(c.judge_api_key_env or "", "")
            if not key:
                return Verdict("unknown", "judge", f"no key for the {name} judge ([shadow] judge_api_key_env)")
            headers = (
                {"authorization": f"Bearer {key}"}
                if name == "openai"
                else {"x-api-key": key, "anthropic-version": "2023-06-01"}
            )
            base = self.upstream_base or JUDGE_HOSTS[name]
            key_fp = key_fingerprint(key)
        request_text = text_of(llm.provider.request_parts(llm.endpoint, llm.body), kinds=("text", "tool_result"))
        url = base + JUDGE_PATHS[name]
        rates = self.services.prices.rates(name, c.judge_model)
        if rates is None:
            return Verdict("unknown", "judge", f"judge {c.judge_model} has no known price: the cap cannot bound it")
        choices: list[Any] = []
        judge_cost = 0.0
        for a, b in ((ref.text, cand.text), (cand.text, ref.text)):
            question = judge.question(request_text, a, b)
            body = _judge_body(name, c.judge_model, question)
            # a token per character is an upper bound for any script (CJK included)
            worst = rates.worst_case(len(question) + len(judge.prompt()) + 50, JUDGE_MAX_TOKENS)
            done = await self._call(
                job, "judge", url, headers, body, c.judge_model, provider, worst, time.time(), key_fp=key_fp
            )
            if done is None:
                eval_row["judge_cost_usd"] = judge_cost
                return Verdict("unknown", "judge", f"daily cap of ${c.usd_per_day:g} reached before the judge")
            reply, cost = done
            judge_cost += cost
            if reply.error is not None:
                eval_row["judge_cost_usd"] = judge_cost
                return Verdict("unknown", "judge", f"judge call failed: {reply.error}")
            choices.append(judge.parse_choice(text_of(provider.answer_parts(JUDGE_ENDPOINT[name], reply.body))))
        eval_row["judge_cost_usd"] = judge_cost
        eval_row["judge"] = judge.VERSION
        return judge.pairwise(choices[0], choices[1])

    def _own_row(
        self, origin: str, job: Job, url: str, model: str, started: float, reply: Reply, sent: Any,
        usage: Any, cost: float | None, *, provider: Any, endpoint: str, key_fp: str | None = None,
    ) -> None:  # fmt: skip
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        row = own_call_row(
            origin=origin, provider=provider.name, endpoint=endpoint, host=parts.hostname or "",
            path=parts.path, model=model, started=started, latency_ms=reply.latency_ms, status=reply.status,
            sent=sent, answer=reply.body, error=reply.error, usage=usage, cost_usd=cost,
            response_model=provider.response_model(reply.body),
            finish_reason=provider.finish_reason(endpoint, reply.body),
            api_key_fp=key_fp or job.llm.api_key_fp, team=job.row.get("team"), store_bodies=self.store_bodies,
        )  # fmt: skip
        writer = self.services.writer
        if writer is not None:
            writer.submit("flows", row)

    def _finish(self, job: Job, eval_row: dict[str, Any], verdict: Verdict) -> None:
        """Record the comparison (any thread: the writer is thread-safe), then tell the main loop."""
        eval_row.update(verdict=verdict.verdict, comparator=verdict.comparator, detail=verdict.detail[:300])
        writer = self.services.writer
        if writer is not None:
            writer.submit("shadow_evals", eval_row)
        loop = self._main_loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_verdict, job, verdict)
            except RuntimeError:  # the main loop closed meanwhile
                pass

    # -- back on the main loop -----------------------------------------------------------------

    def _count(self, what: str, n: int = 1) -> None:
        counts = self.services.shadow_counts
        counts[what] = counts.get(what, 0) + n

    def _on_verdict(self, job: Job, verdict: Verdict) -> None:
        self._count(verdict.verdict)
        flow = job.flow
        flow.comment = f"{flow.comment} · shadow {job.candidate_model}: {verdict.verdict} ({verdict.comparator})"
        try:
            ctx.master.addons.trigger(mitm_hooks.UpdateHook([flow]))  # mitmweb shows the new comment
        except Exception:  # noqa: BLE001 - mitmweb's view is a courtesy; the verdict is recorded
            pass
        if verdict.verdict not in ("pass", "fail"):
            return
        key = group_key(job.row, job.reference_model, job.candidate_model)
        passed, decided = self.services.evidence.get(key, (0, 0))
        self.services.evidence[key] = (passed + (verdict.verdict == "pass"), decided + 1)
        board = self.services.quality
        rolling = board.get(key)
        if rolling is None:
            rolling = board[key] = RollingQuality(self.cfg.window)
        rolling.add(verdict.verdict == "pass")
        self._watch(key, rolling, job)

    def _watch(self, key: tuple[str, str, str, str], rolling: RollingQuality, job: Job) -> None:
        """Monitoring: degraded groups raise an event (and stop being routed with auto_revert); recovered ones resume."""
        if len(rolling.verdicts) < self.cfg.min_evals:
            return
        provider, reference, candidate, task = key
        low, high = rolling.bounds()
        described = f"{reference} → {candidate} ({task})"
        if job.mode == "monitor" and key not in self.services.degraded and rolling.degraded(self.target):
            self.services.degraded.add(key)
            message = (
                f"turnout: routed quality for {described} is below target {self.target:.0%}: pass rate "
                f"{rolling.rate:.0%} over {len(rolling.verdicts)} (95% upper bound {high:.0%})"
            )
            if self.cfg.auto_revert:
                self.services.reverted.add(key)
                message += "; routing for this group is stopped until the evidence recovers"
            log.warning(message)
            self.services.event(
                "quality_degraded", job.flow.id, message,
                {"provider": provider, "reference": reference, "candidate": candidate, "task": task,
                 "pass_rate": rolling.rate, "low": low, "high": high, "n": len(rolling.verdicts),
                 "reverted": self.cfg.auto_revert},
            )  # fmt: skip
        elif key in self.services.degraded and rolling.recovered(self.target):
            self.services.degraded.discard(key)
            self.services.reverted.discard(key)
            message = (
                f"turnout: quality for {described} has recovered: pass rate {rolling.rate:.0%} (lower bound {low:.0%})"
            )
            log.warning(message)
            self.services.event("quality_recovered", job.flow.id, message, {"provider": provider, "reference": reference,
                                "candidate": candidate, "task": task, "pass_rate": rolling.rate})  # fmt: skip

    def _model_seen(self, flow: http.HTTPFlow, llm: state.LLMFlow, row: dict[str, Any]) -> None:
        """A silent model update: a model routing involves answers as a model (or fingerprint) not seen before."""
        if row.get("decision") != "route" or not llm.model or not isinstance(llm.response_json, dict):
            return
        if answer_block(row) is not None:
            return
        body = llm.response_json
        seen_now = (body.get("model") if isinstance(body.get("model"), str) else None,
                    body.get("system_fingerprint") if isinstance(body.get("system_fingerprint"), str) else None)  # fmt: skip
        key = (llm.provider.name, llm.model)
        seen = self.seen_models.setdefault(key, set())
        if seen_now in seen:
            return
        if seen:
            message = (
                f"turnout: {llm.provider.name} model {llm.model} now answers as {seen_now[0]} "
                f"(fingerprint {seen_now[1]}); seen before: {sorted(map(str, seen))[:3]} — a silent model update?"
            )
            log.warning(message)
            self.services.event(
                "model_changed",
                flow.id,
                message,
                {"model": llm.model, "now": seen_now, "before": sorted(map(str, seen))},
            )
        seen.add(seen_now)

    def done(self) -> None:
        if self.outbound is not None:
            cut = self.outbound.close()
            self.outbound = None
            if cut:
                self._count("dropped", cut)
                log.info("turnout: %d shadow call(s) still running at shutdown were dropped", cut)


JUDGE_ENDPOINT = {"openai": "chat", "anthropic": "messages"}


def _judge_body(provider: str, model: str, question: str) -> dict[str, Any]:
    """The judge's request; no temperature (reasoning models refuse one), a small output ceiling."""
    if provider == "anthropic":
        return {"model": model, "max_tokens": JUDGE_MAX_TOKENS, "system": judge.prompt(),
                "messages": [{"role": "user", "content": question}]}  # fmt: skip
    return {"model": model, "max_completion_tokens": JUDGE_MAX_TOKENS,
            "messages": [{"role": "system", "content": judge.prompt()}, {"role": "user", "content": question}]}  # fmt: skip


def _base_url(url: str) -> str:
    """The base of a provider URL: everything before its API path (`…/v1/chat/completions` → `…`)."""
    i = url.rfind("/v1/")
    return url[:i] if i >= 0 else url.split("?", 1)[0].rstrip("/")
