"""A TCP relay that puts a network distance between a client and a server (this kernel has no netem).

Each new connection is held for one round trip before it reaches the server (the TCP handshake), and
every segment is delayed by half a round trip in its direction, in order and without serialising the
delays (a byte sent at t arrives at t + RTT/2, however many are in flight). A TLS 1.3 handshake over
it then costs one more round trip, and a request and its answer one more: what a provider RTT ms
away costs. Run standalone: `python tests/latency_relay.py --rtt 40 --to 127.0.0.1:8443`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time


class LatencyRelay:
    method = "user-space relay"

    def __init__(self, target: tuple[str, int], rtt_ms: float, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self.half = rtt_ms / 2000
        self.host, self.port = host, port
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        task = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((time.monotonic() + self.half, data))
                if not data:
                    break
            await task
        except (ConnectionError, OSError):
            task.cancel()
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        await asyncio.sleep(2 * self.half)  # the TCP handshake: one round trip before anything flows
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, swriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._pipe(creader, swriter), self._pipe(sreader, cwriter))

    def start(self) -> "LatencyRelay":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._accept, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="latency-relay", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _shutdown(self) -> None:
        """Close the server and every piped connection, so no task outlives the loop."""
        assert self._server is not None
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt", type=float, required=True, help="round-trip time to add, ms")
    ap.add_argument("--to", required=True, help="host:port of the server")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    host, _, port = a.to.rpartition(":")
    relay = LatencyRelay((host, int(port)), a.rtt, port=a.port).start()
    print(f"latency relay on 127.0.0.1:{relay.port} -> {a.to}, +{a.rtt} ms RTT", flush=True)
    threading.Event().wait()
