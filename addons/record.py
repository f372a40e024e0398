"""Record: every provider flow becomes one ledger row — streamed or not, answered, failed or aborted.

Streams are teed, never buffered: `flow.response.stream` is a `StreamTee` (addons/stream_tee.py)
that passes bytes on as they arrive and feeds a copy to the provider's assembler. The row itself is
built by `ledger/flowrow.py` and written by the writer LedgerStore owns; this addon decides when:
at the answer's end, after a count of a stream's tokens, or — at shutdown, after a drain — for
whatever is still open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mitmproxy import ctx, exceptions, http

from turnout.ledger.estimate import unreported_usage
from turnout.ledger.flowrow import Answer, bare_row, build_row, flow_comment, flow_mark
from turnout.ledger.pricing import Usage
from turnout.ledger.writer import LedgerWriter

from . import state
from .services import Services
from .stream_tee import StreamTee

log = logging.getLogger(__name__)

ROW_KEY = "turnout_row"  # flow.metadata: the recorded row (bodies aside), once the flow is recorded


class Record:
    def __init__(self, services: Services | None = None) -> None:
        self.services = services or Services()
        self.store_bodies = True
        self.open_flows: dict[str, http.HTTPFlow] = {}
        self.counting: dict[str, str | None] = {}  # flow id -> its error, while its tokens are counted
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.committed: dict[str, asyncio.Future[None]] = {}  # durable mode: flow id -> its row is on disk

    def load(self, loader) -> None:
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

    def configure(self, updated: set[str]) -> None:
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
        json_stream = (
            llm.stream
            and llm.endpoint is not None
            and flow.response.status_code == 200
            and llm.provider.stream_framing(llm.endpoint) == "json-array"
        )
        if (ctype.startswith("text/event-stream") or json_stream) and not llm.served_locally:
            try:
                flow.response.stream = StreamTee(llm, flow.response.headers.get("content-encoding"))
            except ValueError as e:  # an encoding we cannot decode: still stream, record without content
                log.warning("turnout: %s; streaming %s unparsed", e, llm.path)
                flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> Any:
        llm = state.get(flow)
        if llm is None or llm.recording.recorded or flow.response is None:
            return
        # responseheaders always ran first (mitmproxy emulates it for answers set in the request hook),
        # so deferred decisions and turnout's headers are already on the response.
        waiter = self._committed_waiter(flow)
        self._record_when_counted(flow, llm, error=None)
        return waiter

    def error(self, flow: http.HTTPFlow) -> Any:
        llm = state.get(flow)
        if llm is None or llm.recording.recorded:
            return
        msg: str | None = llm.recording.timeout_reason or (flow.error.msg if flow.error else "unknown error")
        asm = llm.recording.assembler
        if asm is not None and asm.done and flow.response is not None and not llm.recording.timeout_reason:
            # The provider's end event went through (and with it everything the client reads): a client
            # closing its connection after it, before the body's last framing bytes, ended nothing.
            msg = None
        elif asm is not None:
            msg = f"stream incomplete: {msg}"
        waiter = self._committed_waiter(flow)
        self._record_when_counted(flow, llm, error=msg)
        return waiter

    def _committed_waiter(self, flow: http.HTTPFlow) -> Any:
        """Durable mode: a coroutine the hook returns, which mitmproxy awaits before it lets the answer's
        end go to the client — done once the flow's row is committed (or after 30 s, said loudly)."""
        if not self.services.durable or self.writer is None:
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
        rec = llm.recording
        rec.counted_usage = await asyncio.to_thread(count_safely, flow.id, args)
        rec.count_failed = rec.counted_usage is None
        error = self.counting.pop(flow.id, None)
        if not rec.recorded:  # the shutdown drain may have recorded it meanwhile
            self._record(flow, llm, error=error)

    def done(self) -> Any:
        """Record what is still open — after a drain when the proxy is shutting down (LedgerStore, next in
        the chain, then closes the writer).

        Sync on purpose: mitmproxy also calls `done` synchronously when an addon is removed (a
        script reload). At shutdown it dispatches `done` asynchronously and awaits what a hook
        returns, so that is when the drain coroutine is handed back.
        """
        if state.shutting_down():
            return self._drain_then_close(ctx.options.turnout_drain if self.open_flows else 0)
        self._close()
        return None

    async def _drain_then_close(self, seconds: int) -> None:
        # Like a load-balanced server: stop taking connections, let the answers in flight finish (mitmproxy
        # keeps serving open connections until this returns), then record whatever is still open.
        if seconds > 0:
            log.info(
                "turnout: shutting down; waiting up to %ds for %d flow(s) in flight", seconds, len(self.open_flows)
            )
            self.draining = True
            await self._stop_listening()
            deadline = time.monotonic() + seconds
            while self.open_flows and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self._close()
        await self._close_connections()  # idle keep-alive connections too: each ends instead of being cancelled

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
            if llm is not None and not llm.recording.recorded:
                # a flow still being counted has ended already: it keeps its own outcome (counted here, inline)
                error = self.counting.pop(flow.id, "turnout shut down before the flow finished")
                self._record(flow, llm, error=error)

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
        llm.recording.recorded = True
        self.open_flows.pop(flow.id, None)
        client = flow.client_conn.peername
        who = {
            "flow_id": flow.id,
            "method": flow.request.method,
            "client_addr": f"{client[0]}:{client[1]}" if client else None,
            "store_bodies": self.store_bodies,
        }
        try:
            row = build_row(
                llm, answer_of(flow), error, **who, prices=self.services.prices, counted=counted_usage(flow, llm)
            )
        except Exception as e:  # noqa: BLE001 - a bug here must cost a column, not the row
            log.exception("turnout: could not parse flow %s", flow.id)
            row = bare_row(llm, **who, error=error or f"turnout could not parse this flow: {e}")
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
        # The live state leaves the flow (its bodies and assembler with it); the row stays, serialisable
        # for `mitmdump -w` and mitmweb.
        flow.metadata.pop(state.KEY, None)
        flow.metadata[ROW_KEY] = {k: v for k, v in row.items() if k not in ("request_body", "response_body")}


def answer_of(flow: http.HTTPFlow) -> Answer | None:
    resp = flow.response
    if resp is None:
        return None
    return Answer(
        status_code=resp.status_code,
        content_type=resp.headers.get("content-type", ""),
        content=lambda: resp.get_content(strict=False) or b"",
        streamed=bool(resp.stream),
        ended_at=resp.timestamp_end,
        cut=flow.error is not None,
    )


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
    asm, resp = llm.recording.assembler, flow.response
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
    return llm.recording.assembler.usage, partial, llm.body, llm.model, llm.prompt_tokens


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
    if llm.recording.counted_usage is not None or llm.recording.count_failed:
        return llm.recording.counted_usage
    partial = unreported_answer(flow, llm)
    return None if partial is None else count_safely(flow.id, count_args(flow, llm, partial))
