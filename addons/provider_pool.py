"""The relay's pooled connections to providers: HTTP/1.1 keep-alive, or HTTP/2 where it is switched on.

Two clients behind one small interface, because each is the better one for its job:

* **HTTP/1.1** (the default) — aiohttp's pool, one call per connection at a time. Its C parser makes a
  relayed call about a millisecond cheaper in CPU than httpx's on the proxy's own process (where the
  relay shares the interpreter with mitmproxy), measured side by side; docs/connections.md.
* **HTTP/2** (`turnout_warm_pool_http2`) — httpx's pool (httpcore and h2), offering h2 in ALPN and
  falling back to HTTP/1.1 where the provider does not take it. One connection multiplexes many calls,
  so a burst of new client connections rides the connections already warm instead of opening one each.

Either way the pool is bounded (`size` connections), idle connections close after `idle` seconds, and
a connection the provider closed is found out before reuse. What passes through is the provider's: the
raw body (never decompressed), the headers as sent, the status and reason. The clients add nothing of
their own — no user agent, no accept headers — and keep no cookies: a cookie one tenant's call was
given must never ride another tenant's.
"""

from __future__ import annotations

import http.cookiejar
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import aiohttp
import httpx
from multidict import CIMultiDict, CIMultiDictProxy

# httpx logs every request's URL at INFO, and a Gemini URL can hold the key (?key=…): never into turnout's log
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

# what a broken provider connection raises while an answer is read (a cut body, a reset, a stall)
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, aiohttp.ClientError, OSError)
# what `send` raises when the connection, a free one in the pool or the answer's headers take too long
TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, httpx.TimeoutException)
_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")  # aiohttp's own, unless the caller sent them


class ProviderResponse(Protocol):
    """A provider's answer once its headers are in: what the relay reads of it."""

    status: int
    reason: str
    http_version: str  # "HTTP/1.1" | "HTTP/2"
    headers: CIMultiDict[str] | CIMultiDictProxy[str]

    async def read(self) -> bytes:
        """The whole body as the provider sent it (content-encoding untouched)."""
        ...

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives, each piece as soon as it is in."""
        ...

    async def release(self) -> None:
        """Back to the pool when read to its end; otherwise the connection (or h2 stream) is closed."""
        ...


class _Aiohttp:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason or ""
        self.http_version = f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else "HTTP/1.1"
        self.headers = resp.headers

    async def read(self) -> bytes:
        return await self._resp.read()

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()

    async def release(self) -> None:
        self._resp.release()


class _Httpx:
    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.reason = resp.reason_phrase
        self.http_version = resp.http_version
        self.headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers.raw)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self._resp.aiter_raw()])

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._resp.aiter_raw()

    async def release(self) -> None:
        await self._resp.aclose()


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class ProviderPool:
    """Create it on the event loop that will use it (aiohttp binds its session to the running loop)."""

    def __init__(self, *, verify: ssl.SSLContext | bool, size: int, idle: float, http2: bool) -> None:
        self._httpx: httpx.AsyncClient | None = None
        self._aiohttp: aiohttp.ClientSession | None = None
        if http2:
            self._httpx = httpx.AsyncClient(
                http2=True,
                verify=verify,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=idle),
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
                trust_env=False,
                follow_redirects=False,
            )
            self._httpx.headers.clear()  # no user-agent, accept or accept-encoding the caller did not send
        else:
            self._aiohttp = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=verify, limit=size, keepalive_timeout=idle),
                auto_decompress=False,  # bodies pass through byte for byte
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_AUTO_HEADERS,
                trust_env=False,
            )

    async def send(
        self, url: str, headers: Sequence[tuple[str, str]], data: bytes, *, connect_timeout: float, stall_timeout: float
    ) -> ProviderResponse:
        """The answer once its headers are in. Raises one of TIMEOUTS when the connection (or a free one in
        the pool) takes longer than `connect_timeout`, one of UPSTREAM_ERRORS when it fails."""
        framed = [*headers, ("content-length", str(len(data)))]  # as a client writes it: neither client adds one
        if self._aiohttp is not None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=stall_timeout)
            resp = await self._aiohttp.post(url, headers=framed, data=data, allow_redirects=False, timeout=timeout)
            return _Aiohttp(resp)
        assert self._httpx is not None
        limits = httpx.Timeout(connect=connect_timeout, pool=connect_timeout, read=stall_timeout, write=stall_timeout)
        request = self._httpx.build_request("POST", url, headers=framed, content=data, timeout=limits)
        return _Httpx(await self._httpx.send(request, stream=True))

    async def close(self) -> None:
        if self._aiohttp is not None:
            await self._aiohttp.close()
        if self._httpx is not None:
            await self._httpx.aclose()
