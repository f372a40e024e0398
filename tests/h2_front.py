"""An HTTP/2 provider for tests: TLS with h2 in ALPN (and HTTP/1.1), in front of tests/upstream.py.

hypercorn serves a small ASGI app that hands each request to the HTTP/1.1 test server and streams its
answer back as it comes, so every behaviour of the test server is there over HTTP/2 too. It keeps, per
request, the HTTP version it came in with and the connection it came on (the client's address and port).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

import httpx

from certificates import self_signed  # tests/certificates.py

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}


class H2Front:
    def __init__(self, upstream_port: int, certs: Path) -> None:
        self.upstream = f"http://127.0.0.1:{upstream_port}"
        self.cert, self.key = self_signed(certs)
        self.requests: list[dict[str, Any]] = []  # http_version, connection (client address, port), path, headers
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def connections(self) -> set[tuple[str, int]]:
        return {r["connection"] for r in self.requests}

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        self.requests.append({
            "http_version": scope["http_version"], "connection": tuple(scope["client"]), "path": scope["path"],
            "headers": headers,
        })  # fmt: skip
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=120)
            self._client.headers.clear()
        url = (
            self.upstream
            + scope["raw_path"].decode()
            + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        )
        request = self._client.build_request(
            scope["method"], url, headers=[(k, v) for k, v in headers if k.lower() not in _HOP], content=body
        )
        resp = await self._client.send(request, stream=True)
        try:
            await send({
                "type": "http.response.start", "status": resp.status_code,
                "headers": [(k, v) for k, v in resp.headers.raw if k.decode("latin-1").lower() not in _HOP],
            })  # fmt: skip
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await resp.aclose()

    def start(self) -> "H2Front":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{self._sock.fileno()}"]
        config.certfile, config.keyfile = str(self.cert), str(self.key)
        config.alpn_protocols = ["h2", "http/1.1"]
        config.accesslog = config.errorlog = None
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop = asyncio.Event()
            ready.set()
            loop.run_until_complete(serve(self._app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
            loop.close()

        self._thread = threading.Thread(target=run, name="h2-front", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(OSError):  # hypercorn closed it already
            self._sock.close()
