"""Record: every provider flow becomes one ledger row — streamed or not, answered, failed or aborted.

Streams are teed, never buffered: `flow.response.stream` is a `StreamTee` (addons/stream_tee.py)
that passes bytes on as they arrive and feeds a copy to the provider's assembler. The row is written by the
background LedgerWriter; this addon only builds it. Like mitmproxy's `save`, the recorder is a
promise: if the ledger cannot be written, Intercept refuses traffic rather than forward it unseen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from mitmproxy import ctx, exceptions, http

from turnout.ledger.estimate import unreported_usage
from turnout.ledger.pricing import PriceBook, Usage, load_genai_prices, load_price_file, parse_price_overrides
from turnout.ledger.sse import SSEParser
from turnout.ledger.store import iso_utc
from turnout.ledger.writer import LedgerWriter

from . import config, state
from .stream_tee import StreamTee
from .services import Services

log = logging.getLogger(__name__)

def _error_text(status: int, body: Any, raw: bytes) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        parts = [str(err.get(k)) for k in ("type", "code") if err.get(k)]
        return f"HTTP {status}: {err.get('message') or ''} ({', '.join(parts)})"[:500]
    return f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"


class Record:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self.store_bodies = True
        self.open_flows: dict[str, http.HTTPFlow] = {}
        self.counting: dict[str, str | None] = {}  # flow id -> its error, while its tokens are counted
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.durable = False
        self.committed: dict[str, asyncio.Future[None]] = {}  # durable mode: flow id -> its row is on disk

    def load(self, loader) -> None:
        loader.add_option("turnout_db", str, "turnout.db", "The ledger: a SQLite file, one row per provider flow.")
        loader.add_option(
            "turnout_store_bodies", bool, True, "Store request and response bodies in the ledger (never auth headers)."
        )
        loader.add_option(
            "turnout_drain",
            int,
            5,
            "Seconds that LLM flows in flight at shutdown (SIGTERM) get to finish, with no new connections "
            "accepted; what is still open then is recorded as interrupted. 0: record them at once.",
        )
        loader.add_option(
            "turnout_durable",
            bool,
            False,
            "Audit mode: an answer's last byte reaches the client only once its ledger row is committed (fsync'd). "
            "Costs the commit's latency on every call's end; off, a crash can lose the last ~50 ms of rows.",
        )
        loader.add_option(
            "turnout_ledger_max_backlog",
            int,
            10_000,
            "Rows queued for the ledger past which new provider requests are refused (503) until it catches up.",
        )
        loader.add_option(
            "turnout_ledger_max_backlog_mb",
            int,
            64,
            "MB of rows (bodies included) queued for the ledger past which new provider requests are refused (503).",
        )
        loader.add_option(
            "turnout_prices",
            str,
            "",
            "A TOML/JSON price file for custom or self-hosted models: "
            '[models."name"] input_mtok, output_mtok, cached_input_mtok (USD per million tokens).',
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_db" in updated:
            if self.writer is not None:
                self.writer.close()
            try:
                self.services.writer = LedgerWriter(ctx.options.turnout_db)
            except Exception as e:  # noqa: BLE001 - any failure to open is fatal at start, with the path
                raise exceptions.OptionsError(f"turnout_db: cannot open ledger {ctx.options.turnout_db!r}: {e}")
            self.writer.start()
            updated = updated | {"turnout_ledger_max_backlog"}
        if updated & {"turnout_ledger_max_backlog", "turnout_ledger_max_backlog_mb"}:
            rows, mb = ctx.options.turnout_ledger_max_backlog, ctx.options.turnout_ledger_max_backlog_mb
            if rows < 1 or mb < 1:
                raise exceptions.OptionsError("turnout_ledger_max_backlog(_mb): at least 1")
            if self.writer is not None:
                self.writer.max_backlog, self.writer.max_backlog_bytes = rows, mb * 1024 * 1024
        if updated & {"turnout_prices", "turnout_config"}:
            try:
                table = config.section(ctx.options.turnout_config, "prices")
                if set(table) - {"models"}:
                    raise ValueError(f"[prices]: unknown key(s) {sorted(set(table) - {'models'})}; expected models")
                overrides = parse_price_overrides(table.get("models", {}), origin="[prices]")
                if ctx.options.turnout_prices:
                    overrides.update(load_price_file(ctx.options.turnout_prices))
            except (OSError, ValueError) as e:
                raise exceptions.OptionsError(f"turnout_prices: {e}") from None
            self.services.prices = PriceBook(overrides)
            load_genai_prices()
        if updated & {"turnout_durable", "turnout_db"}:
            self.durable = ctx.options.turnout_durable
            if self.durable and self.writer is not None:
                self.writer.durable()
        if "turnout_store_bodies" in updated:
            self.store_bodies = ctx.options.turnout_store_bodies
        if "turnout_drain" in updated and not 0 <= ctx.options.turnout_drain <= 3600:
            raise exceptions.OptionsError(f"turnout_drain: seconds in [0, 3600], not {ctx.options.turnout_drain}")

    @property
    def writer(self) -> LedgerWriter | None:
        return self.services.writer

    @property
    def draining(self) -> bool:
        return self.services.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.services.draining = value

    def request(self, flow: http.HTTPFlow) -> None:
        if state.get(flow) is not None:
            self.open_flows[flow.id] = flow

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        llm = state.get(flow)
        if llm is None or flow.response is None:
            return
        state.run_pending(llm)
        if self.writer is not None and not self.writer.healthy:
            # rows are not landing: say so on every answer until they do (the refusal comes at the bound)
            llm.response_headers["x-turnout-ledger"] = "failing"
        state.set_headers(flow.response.headers, llm.response_headers)
        if self.draining:
            flow.response.headers["connection"] = "close"  # no next request on this connection
        ctype = flow.response.headers.get("content-type", "")
        if ctype.startswith("text/event-stream") and not llm.served_locally:
            try:
                flow.response.stream = StreamTee(llm, flow.response.headers.get("content-encoding"))
            except ValueError as e:  # an encoding we cannot decode: still stream, record without content
                log.warning("turnout: %s; streaming %s unparsed", e, llm.path)
                flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> Any:
        llm = state.get(flow)
        if llm is None or llm.recorded or flow.response is None:
            return
        # responseheaders always ran first (mitmproxy emulates it for answers set in the request hook),
        # so deferred decisions and turnout's headers are already on the response.
        waiter = self._committed_waiter(flow)
        self._record_when_counted(flow, llm, error=None)
        return waiter

    def error(self, flow: http.HTTPFlow) -> Any:
        llm = state.get(flow)
        if llm is None or llm.recorded:
            return
        msg = llm.timeout_reason or (flow.error.msg if flow.error else "unknown error")
        if llm.assembler is not None:
            msg = f"stream incomplete: {msg}"
        waiter = self._committed_waiter(flow)
        self._record_when_counted(flow, llm, error=msg)
        return waiter

    def _committed_waiter(self, flow: http.HTTPFlow) -> Any:
        """Durable mode: a coroutine the hook returns, which mitmproxy awaits before it lets the answer's
        end go to the client — done once the flow's row is committed (or after 30 s, said loudly)."""
        if not self.durable or self.writer is None:
            return None
        loop = asyncio.get_running_loop()
        fut = self.committed[flow.id] = loop.create_future()

        async def wait() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(fut), 30)
            except TimeoutError:
                log.error("turnout: the ledger row of %s is not committed after 30s; releasing the answer", flow.id)
            finally:
                self.committed.pop(flow.id, None)

        return wait()

    def _record_when_counted(self, flow: http.HTTPFlow, llm: state.LLMFlow, *, error: str | None) -> None:
        """Record now — or, for a stream the provider reported no usage for, once turnout has counted
        its tokens on a worker thread: a long prompt takes milliseconds of BPE, and mitmproxy sends the
        stream's last bytes to the client only after this hook returns. Until then the flow stays open,
        so a shutdown drain waits for it (or records it itself, with this hook's error)."""
        partial = unreported_answer(flow, llm)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if partial is None or loop is None:
            self._record(flow, llm, error=error)
            return
        self.counting[flow.id] = error
        task = loop.create_task(self._count_then_record(flow, llm, count_args(flow, llm, partial)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count_then_record(self, flow: http.HTTPFlow, llm: state.LLMFlow, args: tuple[Any, ...]) -> None:
        llm.counted_usage = await asyncio.to_thread(count_safely, flow.id, args)
        llm.count_failed = llm.counted_usage is None
        error = self.counting.pop(flow.id, None)
        if not llm.recorded:  # the shutdown drain may have recorded it meanwhile
            self._record(flow, llm, error=error)

    def done(self) -> Any:
        """Record what is still open and close the ledger — after a drain when the proxy is shutting down.

        Sync on purpose: mitmproxy also calls `done` synchronously when an addon is removed (a
        script reload). At shutdown it dispatches `done` asynchronously and awaits what a hook
        returns, so that is when the drain coroutine is handed back.
        """
        if self.open_flows and ctx.options.turnout_drain > 0 and state.shutting_down():
            return self._drain_then_close(ctx.options.turnout_drain)
        self._close()
        return None

    async def _drain_then_close(self, seconds: int) -> None:
        # Like a load-balanced server: stop taking connections, let the answers in flight finish (mitmproxy
        # keeps serving open connections until this returns), then record whatever is still open.
        log.info("turnout: shutting down; waiting up to %ds for %d flow(s) in flight", seconds, len(self.open_flows))
        self.draining = True
        await self._stop_listening()
        deadline = time.monotonic() + seconds
        while self.open_flows and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._close()
        await self._close_connections()

    @staticmethod
    async def _close_connections() -> None:
        """Close what is still connected after the drain, so each connection ends rather than being
        cancelled with the loop (which asyncio reports as one CancelledError traceback per connection)."""
        server = ctx.master.addons.get("proxyserver")
        handlers = list(getattr(server, "connections", {}).values())
        for handler in handlers:
            for io in list(getattr(handler, "transports", {}).values()):
                if io.writer is not None:
                    io.writer.close()
        if handlers:
            await asyncio.sleep(0.1)  # let each connection's task see its end

    def _close(self) -> None:
        for flow in list(self.open_flows.values()):
            llm = state.get(flow)
            if llm is not None and not llm.recorded:
                # a flow still being counted has ended already: it keeps its own outcome (counted here, inline)
                error = self.counting.pop(flow.id, "turnout shut down before the flow finished")
                self._record(flow, llm, error=error)
        if self.writer is not None:
            self.writer.close()

    @staticmethod
    async def _stop_listening() -> None:
        server = ctx.master.addons.get("proxyserver")
        if server is None:
            return
        try:
            await server.servers.update([])  # closes the listening sockets only; open connections go on
        except Exception:  # noqa: BLE001 - draining is best effort; recording what is left is not
            log.exception("turnout: could not stop listening before the drain")

    # -- building the row ------------------------------------------------------------------

    def _record(self, flow: http.HTTPFlow, llm: state.LLMFlow, *, error: str | None) -> None:
        state.run_pending(llm)
        llm.recorded = True
        self.open_flows.pop(flow.id, None)
        try:
            row = self.build_row(flow, llm, error)
        except Exception as e:  # noqa: BLE001 - a bug here must cost a column, not the row
            log.exception("turnout: could not parse flow %s", flow.id)
            row = self._bare_row(flow, llm, error or f"turnout could not parse this flow: {e}")
        for settle in llm.on_record:
            try:
                settle(row)
            except Exception:  # noqa: BLE001
                log.exception("turnout: a settle callback failed for flow %s", flow.id)
        if self.writer is not None:
            fut = self.committed.get(flow.id)
            self.writer.submit("flows", row, None if fut is None else _resolver(fut))
        flow.comment = flow_comment(row)
        if mark := flow_mark(row):
            flow.marked = mark
        flow.metadata[state.KEY] = {k: v for k, v in row.items() if k not in ("request_body", "response_body")}

    def _bare_row(self, flow: http.HTTPFlow, llm: state.LLMFlow, error: str | None) -> dict[str, Any]:
        req = flow.request
        client = flow.client_conn.peername
        return {
            "id": flow.id,
            "started_at": iso_utc(llm.started),
            "provider": llm.provider.name,
            "endpoint": llm.endpoint,
            "host": llm.host,
            "method": req.method,
            "path": llm.path,
            "requested_model": llm.requested_model,
            "model": llm.model,
            "stream": int(llm.stream),
            "api_key_fp": llm.api_key_fp,
            "user": llm.body.get("user") if isinstance(llm.body, dict) and isinstance(llm.body.get("user"), str) else None,
            "client_addr": f"{client[0]}:{client[1]}" if client else None,
            "error": error,
            "request_body": llm.request_text if self.store_bodies else None,
            **llm.columns,
        }

    def build_row(self, flow: http.HTTPFlow, llm: state.LLMFlow, error: str | None) -> dict[str, Any]:
        row = self._bare_row(flow, llm, error)
        resp = flow.response
        now = time.time()
        body: Any = None
        usage: Usage | None = None
        response_text: str | None = None
        if resp is not None:
            row["status_code"] = resp.status_code
            if llm.assembler is not None:  # streamed: the assembled answer is the record
                body = llm.assembler.result()
                usage = llm.assembler.usage
                response_text = json.dumps(body, ensure_ascii=False) if body is not None else None
                counted = counted_usage(flow, llm)
                if counted is not None:
                    usage = counted
                    row["usage_estimated"] = 1
                if llm.assembler.error and not error:
                    error = f"stream error: {llm.assembler.error}"
                if not getattr(llm.assembler, "done", True) and not error:
                    error = "stream ended before it finished"
            else:
                raw = resp.get_content(strict=False) or b""
                if resp.headers.get("content-type", "").startswith("text/event-stream"):
                    # a whole SSE body (e.g. a cache hit rebuilt as a stream): record the assembled answer
                    assembler = llm.provider.stream_assembler(llm.endpoint or "chat")
                    parser = SSEParser()
                    for ev in parser.feed(raw) + parser.close():
                        assembler.feed(ev)
                    body, usage = assembler.result(), assembler.usage
                    response_text = json.dumps(body, ensure_ascii=False) if body is not None else None
                else:
                    response_text = raw.decode("utf-8", "replace")
                    try:
                        body = json.loads(raw) if raw else None
                    except (ValueError, RecursionError):
                        body = None
                        if llm.endpoint and 200 <= resp.status_code < 300 and not error:
                            # a 2xx that is not the provider's JSON (a portal's HTML, a truncated proxy answer)
                            error = f"answer is not JSON ({resp.headers.get('content-type') or 'no content-type'})"
                    if llm.endpoint:
                        usage = llm.provider.response_usage(llm.endpoint, body)
            if resp.status_code >= 400 and not error:
                error = _error_text(resp.status_code, body, (response_text or "").encode())
            if error and llm.assembler is None and not llm.served_locally and not resp.stream and flow.error:
                # The upstream's headers came but its body did not finish: mitmproxy answers the client with
                # its own 502 instead (a non-streamed answer leaves only once whole). Record what the client got.
                row["status_code"] = 502
                error = f"upstream answered {resp.status_code} but the body did not arrive whole: {error}"
            llm.response_json = body
            row["response_model"] = llm.provider.response_model(body)
            row["finish_reason"] = llm.provider.finish_reason(llm.endpoint, body) if llm.endpoint else None
            end = llm.stream_ended_at or resp.timestamp_end or now
        else:
            end = now
            if llm.assembler is not None:
                partial = llm.assembler.result()
                usage = llm.assembler.usage
                response_text = json.dumps(partial, ensure_ascii=False) if partial is not None else None
        if error is None and llm.body_error and llm.endpoint:
            error = llm.body_error
        row["error"] = error
        row["ended_at"] = iso_utc(end)
        row["latency_ms"] = round((end - llm.started) * 1000, 3)
        if llm.first_byte_at is not None:
            row["ttft_ms"] = round((llm.first_byte_at - llm.started) * 1000, 3)
        if usage is not None:
            row.update(usage._asdict())
            row["total_tokens"] = usage.prompt_tokens + usage.completion_tokens
            priced_model = row.get("response_model") or llm.model
            row["cost_usd"] = self.services.prices.cost(llm.provider.name, priced_model, usage)
        if self.store_bodies:
            row["response_body"] = response_text
        row.update(llm.columns)
        return row


def _resolver(fut: asyncio.Future[None]) -> Any:
    """A thread-safe callback that completes `fut` on its own loop."""
    loop = fut.get_loop()

    def done() -> None:
        try:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))
        except RuntimeError:  # the loop has closed (the process is exiting): nobody waits any more
            pass

    return done


def unreported_answer(flow: http.HTTPFlow, llm: state.LLMFlow) -> Any | None:
    """The answer (as far as it came) of a stream the provider reported no usage for, to count it
    from; None when there is nothing to count (not a stream, usage reported, or not answered)."""
    asm, resp = llm.assembler, flow.response
    if asm is None or asm.usage_final or resp is None or resp.status_code >= 400:
        return None
    try:
        partial = asm.result()
    except Exception:  # noqa: BLE001
        log.exception("turnout: could not assemble the answer of flow %s", flow.id)
        return None
    return {} if partial is None else partial  # answered, cut before its first event: the prompt is billed


def count_args(flow: http.HTTPFlow, llm: state.LLMFlow, partial: Any) -> tuple[Any, ...]:
    """`unreported_usage`'s arguments, read on the event loop (the count itself may run on a thread)."""
    return llm.assembler.usage, partial, llm.body, llm.model, llm.prompt_tokens


def count_safely(flow_id: str, args: tuple[Any, ...]) -> Usage | None:
    """`unreported_usage(*args)`; None, logged, if it fails: a bug here must cost the count, not the row."""
    try:
        return unreported_usage(*args)
    except Exception:  # noqa: BLE001
        log.exception("turnout: could not count the tokens of flow %s", flow_id)
        return None


def counted_usage(flow: http.HTTPFlow, llm: state.LLMFlow) -> Usage | None:
    """turnout's count for a stream without reported usage: made on a worker thread by
    `_count_then_record`, or here on the loop when the flow is recorded without one (shutdown)."""
    if llm.counted_usage is not None or llm.count_failed:
        return llm.counted_usage
    partial = unreported_answer(flow, llm)
    return None if partial is None else count_safely(flow.id, count_args(flow, llm, partial))


def flow_mark(row: dict[str, Any]) -> str:
    """mitmweb's flow mark (an emoji shortcode): blocked ⛔, served from cache ⚡, routed 🔀; "" for none."""
    if row.get("blocked_by"):
        return ":no_entry:"
    if row.get("cache") == "hit":
        return ":zap:"
    if row.get("routed"):
        return ":twisted_rightwards_arrows:"
    return ""


def flow_comment(row: dict[str, Any]) -> str:
    """`gpt-4o → gpt-4o-mini · summarization · 812+95 tok · $0.0004 · cache miss` for mitmweb."""
    parts = []
    req, sent = row.get("requested_model"), row.get("model")
    if req and sent and req != sent:
        parts.append(f"{req} → {sent}")
    elif row.get("would_route_to"):
        parts.append(f"{req} (→ {row['would_route_to']}?)")
    elif req:
        parts.append(str(req))
    if row.get("task"):
        parts.append(str(row["task"]))
    if row.get("prompt_tokens") is not None:
        parts.append(f"{row['prompt_tokens']}+{row.get('completion_tokens') or 0} tok")
    if row.get("cost_usd") is not None:
        parts.append(f"${row['cost_usd']:.4f}")
    if row.get("cache"):
        parts.append(f"cache {row['cache']}")
    if row.get("blocked_by"):
        parts.append(f"blocked: {row['blocked_by']}")
    if row.get("error"):
        parts.append(str(row["error"])[:80])
    return " · ".join(parts)
