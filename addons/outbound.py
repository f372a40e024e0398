"""turnout's own calls to providers (shadows, judges), on a thread of their own.

A worker thread runs its own asyncio loop and one pooled HTTP client (aiohttp: keep-alive, so a
steady trickle of shadow calls reuses warm connections; chosen over httpx for its lower CPU per
call). Nothing here runs on mitmproxy's loop: the proxy hands a coroutine over with `submit` and
never waits for it, so a slow or hanging provider can only ever delay turnout's own calls, never
a client's. Concurrency is bounded by a
semaphore; what does not fit in the queue is dropped and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ssl

import aiohttp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: no answer (connect error, timeout)
    body: Any  # parsed JSON, or None
    error: str | None  # why there is no usable answer
    latency_ms: float


class Outbound:
    def __init__(self, *, concurrency: int = 4, max_queued: int = 64, verify: Any = True) -> None:
        self.concurrency, self.max_queued, self.verify = concurrency, max_queued, verify
        self.queued = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        tls = self._ssl()  # here, so a bad CA file is an error at start rather than a thread that never runs

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self._sem = asyncio.Semaphore(self.concurrency)
                self._client = loop.run_until_complete(self._session(tls))
            except Exception:  # noqa: BLE001 - reported below; submit() then refuses every job
                log.exception("turnout: the outbound client could not start; shadow calls are off")
                ready.set()
                return
            self._loop = loop  # published only once the session exists
            ready.set()
            loop.run_forever()
            # stopped (close): what is still running was cancelled; let it unwind, then release the pool
            pending = [t for t in self._tasks if not t.done()]
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._client.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="turnout-outbound", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            log.error("turnout: the outbound client did not start within 10s; shadow calls are off")

    @staticmethod
    async def _session(tls: ssl.SSLContext | bool) -> aiohttp.ClientSession:  # aiohttp wants its running loop
        # no cookie jar: a cookie a provider set on one tenant's shadow must not ride another tenant's
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls), trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        )

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.verify is False:
            return False
        return ssl.create_default_context(cafile=self.verify if isinstance(self.verify, str) else None)

    def submit(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Run `job()` on the outbound loop, bounded; False when it does not fit (the caller counts the drop)."""
        with self._lock:
            if self._loop is None or self.queued >= self.max_queued:
                return False
            self.queued += 1
        self._loop.call_soon_threadsafe(self._spawn, job)
        return True

    def _spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                assert self._sem is not None
                async with self._sem:
                    await job()
            except Exception:  # noqa: BLE001 - a bug in one job must not stop the others
                log.exception("turnout: an outbound job failed")
            finally:
                with self._lock:
                    self.queued -= 1

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post_json(self, url: str, headers: dict[str, str], body: Any, timeout: float) -> Reply:
        """POST `body` as JSON; the reply parsed. Never raises: failures are a Reply with `error`."""
        assert self._client is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._client.post(
                url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
            ) as r:
                status, raw = r.status, await r.read()
        except TimeoutError:
            return Reply(None, None, f"timed out after {timeout:g}s", (loop.time() - started) * 1000)
        except aiohttp.ClientError as e:
            return Reply(None, None, f"{type(e).__name__}: {e}"[:200], (loop.time() - started) * 1000)
        latency = (loop.time() - started) * 1000
        try:
            parsed = json.loads(raw)
        except ValueError:
            return Reply(status, None, f"HTTP {status}: the answer is not JSON", latency)
        if status >= 400:
            err = parsed.get("error") if isinstance(parsed, dict) else None
            msg = err.get("message") if isinstance(err, dict) else None
            return Reply(status, parsed, f"HTTP {status}: {msg or 'error'}"[:200], latency)
        return Reply(status, parsed, None, latency)

    def close(self, timeout: float = 2.0) -> int:
        """Stop: calls still running are cancelled (their jobs see CancelledError). Returns how many were."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return 0
        self._loop = None
        with self._lock:
            running = self.queued  # the jobs running or waiting: the loop's own set is not ours to iterate

        def shutdown() -> None:
            for t in list(self._tasks):
                t.cancel()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        thread.join(timeout)
        self._thread = None
        return running
