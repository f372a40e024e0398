"""The failover relay: an in-process HTTP hop that tries the provider, then the next target, translated.

mitmproxy sends a request upstream on the client connection's own server connection and cannot
stream an answer an addon made itself, so "try another provider, translate its stream back" cannot
happen inside a hook. A call under a `[[failover]]` rule is therefore sent to this relay instead
(loopback, its own thread and event loop; its provider connections are addons/provider_pool.py's: HTTP/1.1
keep-alive, or HTTP/2 where switched on and offered); mitmproxy streams whatever the
relay answers as it would the provider's, so the tee, the ledger and mitmweb see it as usual.

For each call the relay sends the request to its provider as it came (bytes, headers, errors and
bodies untouched). If that fails before any content (`on`: a 5xx, a 429, no connection, a timeout —
a stream's headers and first content within `first_byte_timeout`, a whole answer's headers within
`timeout` — or a stream that opens and fails before its first content event, whose opening events
are held until then), the request is translated from the original into the
next target's format (ledger/translate.py) and sent there with that provider's key from the
environment; the answer, streamed or not, is translated back into the client's format event by
event (ledger/translate_stream.py). Once content has gone to the client there is no failover: a
fallback that fails mid-stream ends the client's stream with its format's error event. When every
target fails, or none can take the request faithfully, the client gets the original error unchanged.
Per-provider circuits (ledger/circuit.py) skip a provider that keeps failing.

Only requests carrying this process's random token are relayed: another local program cannot use
the relay to spend turnout's fallback keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from turnout.addons.provider_pool import TIMEOUTS, UPSTREAM_ERRORS, ProviderPool, ProviderResponse
from turnout.ledger.circuit import Circuit
from turnout.ledger.failover_config import FailoverConfig, FailoverRule, Target
from turnout.ledger.providers import PROVIDERS
from turnout.ledger.sse import SSEParser
from turnout.ledger.translate import (
    Untranslatable,
    answer_from_hub,
    answer_to_hub,
    gemini_path,
    request_from_hub,
    request_to_hub,
)
from turnout.ledger.translate_stream import HubToClient, TargetToHub, is_content

log = logging.getLogger(__name__)

TOKEN = "x-turnout-relay-token"
CALL = "x-turnout-relay-call"
# on the relay's own gateway errors (the provider gave no answer): why, for the ledger row; never sent on
GATEWAY_ERROR = "x-turnout-relay-gateway-error"
_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-connection", "content-length"})  # fmt: skip
_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
STALL_TIMEOUT = 300.0  # seconds without a byte from a provider mid-answer: the relay gives up on it
WHOLE_TIMEOUT = 600.0  # headers of a call under no failover rule (turnout_upstream_timeout bounds it anyway)
POOL_IDLE = 30.0  # a pooled provider connection idle this long is closed, before the provider's own idle cut


@dataclass(frozen=True)
class Call:
    """What the Failover addon tells the relay about a call (header `x-turnout-relay-call`)."""

    provider: str
    model: str
    fmt: str  # the client's wire format: openai | anthropic | gemini
    stream: bool
    json_array: bool  # Gemini's stream without alt=sse
    include_usage: bool  # the request (as sent) asks for usage in an OpenAI stream
    target: str  # where the request would have gone: scheme://host:port
    failover: bool = True  # False: relayed for the warm connections only (turnout_warm_pool)


@dataclass
class Attempt:
    target: Target
    reason: str  # why it did not answer: 503, 429, connect, timeout, untranslatable: …, no credentials …
    status: int | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes = b""


class Relay:
    def __init__(
        self,
        cfg: FailoverConfig,
        base_url: Callable[[str], str],
        *,
        verify: Any = True,
        on_transition: Callable[[str, str], None] = lambda provider, state: None,
        pool_size: int = 256,
        http2: bool = False,
        on_response: Callable[[str], None] = lambda http_version: None,
    ) -> None:
        self.cfg = cfg
        self.pool_size = pool_size
        self.http2 = http2
        self.on_response = on_response  # each provider answer's HTTP version, from the relay's thread
        self.base_url = base_url
        self.verify = verify
        self.on_transition = on_transition
        self.token = secrets.token_hex(16)
        self.port = 0
        self.circuits = {name: Circuit(cfg.circuit) for name in PROVIDERS}
        self._limited: dict[tuple[str, str], float] = {}  # (provider, credential fingerprint) -> retry-after end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: ProviderPool | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        tls: ssl.SSLContext | bool = False if self.verify is False else ssl.create_default_context(
            cafile=self.verify if isinstance(self.verify, str) else None
        )  # fmt: skip

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(tls))
            except Exception:  # noqa: BLE001 - reported; calls then go to their provider directly
                log.exception("turnout: the failover relay could not start; failover is off")
                ready.set()
                return
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="turnout-failover", daemon=True)
        self._thread.start()
        ready.wait(10)

    async def _serve(self, tls: ssl.SSLContext | bool) -> None:
        self._pool = ProviderPool(verify=tls, size=self.pool_size, idle=POOL_IDLE, http2=self.http2)
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that leaves (mitmproxy dropped the flow) stops its handler and upstream call
        # auto_decompress off: a gzipped request body goes upstream as the client sent it, with its header
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, auto_decompress=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._pool is not None:
            await self._pool.close()

    @property
    def running(self) -> bool:
        return self._loop is not None and self.port > 0

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    # -- one call --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not secrets.compare_digest(request.headers.get(TOKEN, ""), self.token):
            return web.Response(status=403, text="not a turnout relay request")
        call = Call(**json.loads(request.headers[CALL]))
        body = await request.read()
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in _HOP and not k.lower().startswith("x-turnout-relay")
        ]
        primary = Target(call.provider, call.model)
        # a call under no rule came for the warm connections alone: its provider, nothing else, no circuit
        rule = (self.cfg.rule_for(call.provider, call.model) if call.failover else None) or FailoverRule(
            call.provider, "*", (), frozenset(), WHOLE_TIMEOUT, WHOLE_TIMEOUT
        )
        tenant = _tenant(headers)
        attempts: list[Attempt] = []
        if not rule.targets:
            return await self._try(request, call, primary, primary, headers, body, rule, attempts, tenant) or (
                self._original_error(call, attempts)
            )
        skipped_primary = False
        for target in (primary, *rule.targets):
            # a target's circuit is asked only when its turn comes: a probe is spent on a real try
            if target == primary and self._limited.get((call.provider, tenant), 0.0) > time.monotonic():
                attempts.append(Attempt(target, "rate limited (retry-after)"))
                skipped_primary = True
                continue
            if not self._allow(target.provider):
                attempts.append(Attempt(target, "circuit open"))
                skipped_primary = skipped_primary or target == primary
                continue
            answer = await self._try(request, call, target, primary, headers, body, rule, attempts, tenant)
            if answer is not None:
                return answer
        if skipped_primary:  # every target failed too: the provider itself, whatever its circuit says
            answer = await self._try(request, call, primary, primary, headers, body, rule, attempts, tenant)
            if answer is not None:
                return answer
        return self._original_error(call, attempts)

    async def _try(
        self,
        request: web.Request,
        call: Call,
        target: Target,
        primary: Target,
        headers: list[tuple[str, str]],
        body: bytes,
        rule: FailoverRule,
        attempts: list[Attempt],
        tenant: str,
    ) -> web.StreamResponse | None:
        try:
            if target == primary:
                url = call.target + request.path_qs
                return await self._try_primary(request, call, url, headers, body, rule, attempts, tenant)
            return await self._try_fallback(request, call, target, body, rule, attempts)
        except _ClientGone as gone:
            return gone.response  # the client left: nothing more is sent anywhere

    def _allow(self, provider: str) -> bool:
        circuit = self.circuits[provider]
        before = circuit.state
        ok = circuit.allow()
        if circuit.state != before:  # open past its cooldown: this call is the probe
            self.on_transition(provider, circuit.state)
        return ok

    def _failed(self, target: Target, retry_after: float | None = None) -> None:
        changed = self.circuits[target.provider].failure(retry_after)
        if changed:
            self.on_transition(target.provider, changed)

    def _succeeded(self, target: Target) -> None:
        changed = self.circuits[target.provider].success()
        if changed:
            self.on_transition(target.provider, changed)

    def _timeout(self, call: Call, rule: FailoverRule) -> float:
        """How long to wait for response headers: a stream's come at once; a whole answer's only once it
        is written, so a non-streamed call gets `rule.timeout` (long), never the first-byte deadline."""
        return rule.first_byte_timeout if call.stream else rule.timeout

    async def _send(
        self, url: str, headers: list[tuple[str, str]] | dict[str, str], data: bytes, timeout: float
    ) -> ProviderResponse | str:
        """The response once its headers are in, or why there is none ("connect" / "timeout")."""
        assert self._pool is not None
        # the body is whole here: the pool frames it with its length, whatever framing reached the relay
        # (an HTTP/2 request without content-length arrives chunked)
        try:
            resp = await asyncio.wait_for(
                self._pool.send(url, list(headers.items() if isinstance(headers, dict) else headers), data,
                                connect_timeout=timeout, stall_timeout=STALL_TIMEOUT),
                timeout,
            )  # fmt: skip
        except TIMEOUTS:
            log.warning("turnout: no answer from %s within %.0fs", url.split("?", 1)[0], timeout)
            return "timeout"
        except UPSTREAM_ERRORS as e:
            # mitmproxy's own words, which operators grep for
            log.warning("turnout: error establishing server connection to %s: %s", url.split("?", 1)[0], e)
            return "connect"
        self.on_response(resp.http_version)
        return resp

    @staticmethod
    def _failure(status: int) -> str | None:
        return "5xx" if status >= 500 else "429" if status == 429 else None

    async def _try_primary(
        self,
        request: web.Request,
        call: Call,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        rule: FailoverRule,
        attempts: list[Attempt],
        tenant: str,
    ) -> web.StreamResponse | None:
        target = Target(call.provider, call.model)
        resp = await self._send(url, headers, body, self._timeout(call, rule))
        if isinstance(resp, str):
            attempts.append(Attempt(target, resp))
            if rule.targets:
                self._failed(target)
            return None if resp in rule.on else self._original_error(call, attempts)
        try:
            kind = self._failure(resp.status)
            if kind is not None and kind in rule.on:
                data = await resp.read()
                attempts.append(Attempt(target, str(resp.status), resp.status, list(resp.headers.items()), data))
                retry_after = _retry_after(resp) if resp.status == 429 else None
                if retry_after is not None:  # one key's rate limit: that key waits, the provider's circuit counts it
                    self._limited[(call.provider, tenant)] = time.monotonic() + retry_after
                self._failed(target)
                return None
            ctype = resp.headers.get("content-type", "")
            held: list[bytes] = []
            if (
                rule.targets
                and resp.status == 200
                and ctype.startswith("text/event-stream")
                and resp.headers.get("content-encoding", "identity") == "identity"
            ):
                # hold the stream's opening events until its first content: one that fails before it may fail over
                try:
                    async with asyncio.timeout(rule.first_byte_timeout):
                        await self._hold(resp, call, held)
                except Exception as e:  # noqa: BLE001 - a cut, a stall, an error event, an odd chunk: not answered
                    reason = "timeout" if isinstance(e, TimeoutError) else f"stream failed before content ({e})"
                    attempts.append(Attempt(target, reason[:200]))
                    self._failed(target)
                    return None
            if rule.targets:
                self._succeeded(target)
            if not held and resp.headers.get("content-length") and not ctype.startswith("text/event-stream"):
                # a whole answer of known length: one read, one write
                try:
                    data = await resp.read()
                except (*UPSTREAM_ERRORS, TimeoutError) as e:
                    return await self._cut(request, resp, target, e)
                whole = web.Response(status=resp.status, reason=resp.reason, body=data)
                _copy_headers(resp, whole)
                if attempts:
                    whole.headers["x-turnout-failover-tried"] = _tried(attempts)
                return whole
            out = web.StreamResponse(status=resp.status, reason=resp.reason)
            _copy_headers(resp, out)
            if resp.headers.get("content-length") and not held:
                out.content_length = int(resp.headers["content-length"])
            if attempts:
                out.headers["x-turnout-failover-tried"] = _tried(attempts)
            await out.prepare(request)
            for data in held:
                await _write(out, data)
            try:
                async for data in resp.iter_any():
                    await _write(out, data)
            except (*UPSTREAM_ERRORS, TimeoutError) as e:
                _cut_off(request, target, e)  # the client's copy ends cut too, never as if complete
                return out
            await out.write_eof()
            return out
        finally:
            await resp.release()

    @staticmethod
    async def _cut(
        request: web.Request, resp: ProviderResponse, target: Target, e: BaseException
    ) -> web.StreamResponse:
        """The provider's answer broke off before its declared length: the client's copy breaks off too
        (its headers, then the connection closed), so mitmproxy sees the cut it would have seen itself."""
        out = web.StreamResponse(status=resp.status, reason=resp.reason)
        _copy_headers(resp, out)
        out.content_length = int(resp.headers["content-length"])
        try:
            await out.prepare(request)
        except (ConnectionError, RuntimeError):
            pass
        _cut_off(request, target, e)
        return out

    @staticmethod
    async def _hold(resp: ProviderResponse, call: Call, held: list[bytes]) -> None:
        parser, hub = SSEParser(), TargetToHub(call.fmt, call.model)
        async for data in resp.iter_any():
            held.append(data)
            for ev in parser.feed(data):
                hub.feed(ev)
            if hub.error:
                raise ValueError(hub.error)
            if hub.saw_content or hub.done:
                return
        raise ValueError("the stream ended before any content")

    async def _try_fallback(
        self,
        request: web.Request,
        call: Call,
        target: Target,
        body: bytes,
        rule: FailoverRule,
        attempts: list[Attempt],
    ) -> web.StreamResponse | None:
        key = self.cfg.api_key(target.provider)
        if not key:
            attempts.append(Attempt(target, f"no credentials (set providers.{target.provider}.api_key_env)"))
            return None
        try:
            hub = request_to_hub(call.fmt, json.loads(body), model=call.model, stream=call.stream)
            sent = request_from_hub(target.provider, hub, target.model)
        except (Untranslatable, ValueError, TypeError, KeyError, AttributeError) as e:
            attempts.append(Attempt(target, f"untranslatable: {e}"[:200]))
            return None
        url, headers = self._fallback_request(target, key, call.stream)
        data = json.dumps(sent, ensure_ascii=False).encode()
        resp = await self._send(url, headers, data, self._timeout(call, rule))
        if isinstance(resp, str):
            attempts.append(Attempt(target, resp))
            self._failed(target)
            return None
        try:
            if resp.status >= 400:
                await resp.read()
                attempts.append(Attempt(target, str(resp.status)))
                if self._failure(resp.status):
                    self._failed(target)
                return None
            info = {
                "x-turnout-failover": str(target),
                "x-turnout-failover-from": f"{call.provider}:{call.model}",
                "x-turnout-failover-reason": attempts[0].reason if attempts else "",
                "x-turnout-failover-tried": _tried(attempts),
            }
            if not call.stream:
                try:
                    answer = json.loads(await resp.read())
                    translated = answer_from_hub(call.fmt, answer_to_hub(target.provider, answer, target.model))
                except (
                    *UPSTREAM_ERRORS,
                    TimeoutError,
                    ValueError,
                    TypeError,
                    KeyError,
                    AttributeError,
                ) as e:
                    attempts.append(Attempt(target, f"answer unreadable ({type(e).__name__}: {e})"[:200]))
                    self._failed(target)
                    return None
                self._succeeded(target)
                return web.json_response(translated, headers=info, dumps=lambda o: json.dumps(o, ensure_ascii=False))
            return await self._stream_fallback(request, call, target, resp, info, attempts)
        finally:
            await resp.release()

    async def _stream_fallback(
        self,
        request: web.Request,
        call: Call,
        target: Target,
        resp: ProviderResponse,
        info: dict[str, str],
        attempts: list[Attempt],
    ) -> web.StreamResponse | None:
        parser, hub = SSEParser(), TargetToHub(target.provider, target.model)
        client = HubToClient(call.fmt, include_usage=call.include_usage, json_array=call.json_array)
        held: list[bytes] = []
        out: web.StreamResponse | None = None
        try:
            async for data in resp.iter_any():
                for ev in parser.feed(data):
                    for chunk in hub.feed(ev):
                        piece = client.feed(chunk)
                        if out is None:
                            held.append(piece)
                            if is_content(chunk):
                                out = web.StreamResponse(status=200)
                                ctype = "application/json" if call.json_array else "text/event-stream; charset=utf-8"
                                out.headers.update({"content-type": ctype, "cache-control": "no-cache", **info})
                                await out.prepare(request)
                                await _write(out, b"".join(held))
                        elif piece:
                            await _write(out, piece)
                    if hub.error or hub.unsupported:
                        raise ValueError(hub.error or hub.unsupported)
                if hub.done:
                    break
        except _ClientGone:
            raise
        except Exception as e:  # noqa: BLE001 - the fallback's stream broke (a cut, an odd event)
            if out is None:
                attempts.append(Attempt(target, f"stream failed before content ({e})"[:200]))
                self._failed(target)
                return None
            self._failed(target)
            with contextlib.suppress(_ClientGone):
                await _write(out, client.fail(f"turnout: the fallback {target} failed mid-stream: {e}"[:300]))
                await out.write_eof()
            return out
        if out is None:
            attempts.append(Attempt(target, "stream ended before content"))
            self._failed(target)
            return None
        if not hub.done:
            await _write(out, client.fail(f"turnout: the fallback {target}'s stream was cut"))
        else:
            usage = hub.usage_chunk()
            if usage is not None:
                client.feed(usage)
            await _write(out, client.end())
            self._succeeded(target)
        await out.write_eof()
        return out

    def _fallback_request(self, target: Target, key: str, stream: bool) -> tuple[str, dict[str, str]]:
        base = self.base_url(target.provider).rstrip("/")
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if target.provider == "openai":
            headers["authorization"] = f"Bearer {key}"
        elif target.provider == "anthropic":
            headers.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
        else:
            headers["x-goog-api-key"] = key
        path = gemini_path(target.model, stream) if target.provider == "gemini" else _PATHS[target.provider]
        if base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        return base + path, headers

    def _original_error(self, call: Call, attempts: list[Attempt]) -> web.Response:
        """The provider's own error, unchanged (or, when it gave none, a gateway error in its format)."""
        first = next((a for a in attempts if a.target.provider == call.provider and a.status is not None), None)
        tried = _tried(attempts)
        if first is not None:
            out = web.Response(status=first.status or 502, body=first.body)
            for k, v in first.headers or ():
                if k.lower() not in _HOP:
                    out.headers.add(k, v)
            out.headers["x-turnout-failover-tried"] = tried
            return out
        reason = attempts[0].reason if attempts else "no target"
        # the shape of mitmproxy's own gateway errors as ErrorPage writes them (both SDKs read it)
        status, type_, code, retry = {
            "timeout": (504, "turnout_upstream_timeout", "upstream_timeout", "false"),
            "connect": (502, "turnout_upstream_unreachable", "upstream_unreachable", "true"),
        }.get(reason, (502, "turnout_upstream_error", "upstream_error", "false"))
        message = f"turnout: the provider could not be reached or did not answer ({reason}; tried {tried})"
        body = {"type": "error", "error": {"message": message, "type": type_, "param": None, "code": code}}
        headers = {"x-should-retry": retry, GATEWAY_ERROR: message}
        if call.failover:
            headers["x-turnout-failover-tried"] = tried
        return web.json_response(body, status=status, headers=headers)


class _ClientGone(Exception):
    """The client's connection closed while the relay was writing to it."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("client gone")
        self.response = response


async def _write(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except (ConnectionError, RuntimeError) as e:  # aiohttp: ClientConnectionResetError / "closing transport"
        raise _ClientGone(out) from e


def _cut_off(request: web.Request, target: Target, e: BaseException) -> None:
    """The provider's answer broke off mid-body: say so and close the client's connection under it."""
    log.warning("turnout: %s's answer was cut mid-body (%s)", target, e)
    if request.transport is not None:
        request.transport.close()


def _copy_headers(resp: ProviderResponse, out: web.StreamResponse) -> None:
    for k, v in resp.headers.items():
        if k.lower() not in _HOP:
            out.headers.add(k, v)


def _tenant(headers: list[tuple[str, str]]) -> str:
    """Whose rate limit a 429 is: a fingerprint of the call's credentials (never the credentials)."""
    from turnout.ledger.credentials import credential_fingerprint

    return credential_fingerprint({k.lower(): v for k, v in headers}) or ""


def _tried(attempts: list[Attempt]) -> str:
    return "; ".join(f"{a.target}={a.reason}" for a in attempts)[:1000]


def _retry_after(resp: ProviderResponse) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
