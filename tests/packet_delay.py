"""Put a network distance in front of a local port by holding its packets in the kernel (no netem here).

The latency relay (tests/latency_relay.py) accepts a connection at once and only then waits a round
trip, so a client's own start-up work (curl loading its CA bundle) overlaps the simulated handshake,
which a real network puts before it. This holds every TCP packet to or from the port for RTT/2 on
loopback, SYN and SYN-ACK included, as it arrives (an iptables NFQUEUE rule on INPUT and a netlink listener), so
connect() itself takes one RTT, as it does to a provider RTT ms away.

Needs root and the NFQUEUE target; `unavailable()` says why it cannot run. The rules carry
`--queue-bypass`, so if the listener dies the port works undelayed rather than dropping traffic, and
the listener removes them when it exits (SIGTERM included).
Run standalone: `python tests/packet_delay.py --port 8443 --rtt 40`.
"""

from __future__ import annotations

import argparse
import collections
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from latency_relay import LatencyRelay

NETLINK_NETFILTER = 12
_QUEUE_MSG = 3 << 8  # NFNL_SUBSYS_QUEUE
_PACKET, _VERDICT, _CONFIG = _QUEUE_MSG | 0, _QUEUE_MSG | 1, _QUEUE_MSG | 2
_REQUEST, _ACK = 1, 4
_CFG_CMD, _CFG_PARAMS, _CFG_MAXLEN = 1, 2, 3
_PACKET_HDR, _PAYLOAD, _VERDICT_HDR = 1, 10, 2
_BIND, _COPY_PACKET, _ACCEPT = 1, 2, 1
_HEADERS = 60  # bytes of each packet copied up: enough for the IP and TCP headers' flags


def _attr(kind: int, payload: bytes) -> bytes:
    a = struct.pack("=HH", 4 + len(payload), kind) + payload
    return a + b"\0" * (-len(a) % 4)


def _message(kind: int, flags: int, queue: int, attrs: bytes) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body


def _rules(port: int, queue: int) -> list[list[str]]:
    q = ["-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
    # INPUT, not OUTPUT: a packet held before it leaves the sender still counts against the sender's
    # TCP small-queues budget, which then stalls the next segment for the whole hold (a false RTT/2
    # between a stream's first and last event); on loopback the sender lets go of it before INPUT.
    return [["INPUT", "-i", "lo", "-p", "tcp", side, str(port), *q] for side in ("--dport", "--sport")]


def _bind(queue: int) -> socket.socket:
    """A netlink socket bound to the queue, copying each packet's headers (for SYN counting)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
    s.bind((0, 0))
    for attrs in (
        _attr(_CFG_CMD, struct.pack("!BxH", _BIND, 0)),
        _attr(_CFG_PARAMS, struct.pack("!IB", _HEADERS, _COPY_PACKET)) + _attr(_CFG_MAXLEN, struct.pack("!I", 65535)),
    ):
        s.send(_message(_CONFIG, _REQUEST | _ACK, queue, attrs))
        (err,) = struct.unpack_from("=i", s.recv(65536), 16)
        if err:
            s.close()
            raise OSError(-err, f"NFQUEUE {queue}: {os.strerror(-err)}")
    return s


def unavailable() -> str | None:
    """Why the packet delay cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (iptables and a netlink queue)"
    if not shutil.which("iptables"):
        return "no iptables"
    probe = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", "1", "-j", "NFQUEUE", "--queue-num", "1", "--queue-bypass"]
    r = subprocess.run(["iptables", "-C", *probe], capture_output=True, text=True)
    if "No chain" in r.stderr or "Couldn't load target" in r.stderr or "unknown option" in r.stderr:
        return f"iptables has no NFQUEUE target: {r.stderr.strip()}"
    try:
        _bind(60000 + os.getpid() % 5000).close()
    except OSError as e:
        return f"cannot bind a netlink queue: {e}"
    return None


def serve(port: int, rtt_ms: float, queue: int) -> None:
    """Hold each packet RTT/2 and let it go, in arrival order, until SIGTERM; print the SYNs seen."""
    sock = _bind(queue)
    _drop_stale(port)
    rules = _rules(port, queue)
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule], check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    half = rtt_ms / 2000
    held: collections.deque[tuple[float, int]] = collections.deque()
    connections = 0
    print("ready", flush=True)
    try:
        while True:
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
            readable, _, _ = select.select([sock], [], [], timeout)
            if readable:
                data = sock.recv(1 << 16)
                due = time.monotonic() + half
                off = 0
                while off + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, off)
                    if kind == _PACKET:
                        packet_id, syn = _parse(data, off + 20, off + length, port)
                        connections += syn
                        if packet_id is not None:
                            held.append((due, packet_id))
                    off += (length + 3) & ~3
            now = time.monotonic()
            while held and held[0][0] <= now:
                _, packet_id = held.popleft()
                sock.send(
                    _message(_VERDICT, _REQUEST, queue, _attr(_VERDICT_HDR, struct.pack("!II", _ACCEPT, packet_id)))
                )
    finally:
        for _, packet_id in held:  # nothing is lost on the way out
            sock.send(_message(_VERDICT, _REQUEST, queue, _attr(_VERDICT_HDR, struct.pack("!II", _ACCEPT, packet_id))))
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], capture_output=True)
        print(f"connections {connections}", flush=True)


def _drop_stale(port: int) -> None:
    """Remove this port's queue rules left by a listener that was killed (SIGKILL runs no cleanup)."""
    listed = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        words = line.split()
        if (
            words[:2] == ["-A", "INPUT"]
            and "NFQUEUE" in words
            and (f"--dport {port}" in line or f"--sport {port}" in line)
        ):
            subprocess.run(["iptables", "-D", *words[1:]], capture_output=True)


def _parse(data: bytes, start: int, end: int, port: int) -> tuple[int | None, int]:
    """(packet id, 1 if the packet opens a connection to the port else 0)."""
    packet_id, syn = None, 0
    a = start
    while a + 4 <= end:
        alen, kind = struct.unpack_from("=HH", data, a)
        kind &= 0x7FFF
        if kind == _PACKET_HDR:
            (packet_id,) = struct.unpack_from("!I", data, a + 4)
        elif kind == _PAYLOAD:
            ip = data[a + 4 : a + alen]
            ihl = (ip[0] & 15) * 4
            if len(ip) >= ihl + 14:
                (dport,) = struct.unpack_from("!H", ip, ihl + 2)
                syn = int(dport == port and ip[ihl + 13] & 0x12 == 0x02)  # SYN without ACK
        a += (alen + 3) & ~3
    return packet_id, syn


class PacketDelay:
    """The listener as a child process (away from the caller's GIL), with LatencyRelay's interface."""

    method = "packet delay (NFQUEUE)"

    def __init__(self, port: int, rtt_ms: float) -> None:
        self.port = port
        self.rtt_ms = rtt_ms
        self.connections = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> "PacketDelay":
        queue = 1000 + (os.getpid() + self.port) % 50000
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--port", str(self.port), "--rtt", str(self.rtt_ms), "--queue", str(queue)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if line != "ready":
            self._proc.kill()
            raise RuntimeError(f"packet delay did not start (exit {self._proc.wait()})")
        return self

    def stop(self) -> None:
        """Stop holding packets; `connections` is then the number of connections opened to the port."""
        if self._proc is None:
            return
        died = self._proc.poll()  # before we stopped it: from then on its port ran undelayed (bypass)
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        self._proc = None
        if died is not None:
            raise RuntimeError(
                f"the packet delay on port {self.port} exited ({died}) while in use: its figures are void"
            )
        for line in out.splitlines():
            if line.startswith("connections "):
                self.connections = int(line.split()[1])


def provider_distance(port: int, rtt_ms: float, how: str = "auto") -> "PacketDelay | LatencyRelay":
    """The local test provider `rtt_ms` away, started: this packet delay where it can run, else the
    user-space relay (`how`: auto, packet or relay). Dial `.port`; `.connections` is read after `stop()`."""
    from latency_relay import LatencyRelay

    why = unavailable() if how in ("auto", "packet") else "asked for the relay"
    if how == "packet" and why:
        raise RuntimeError(f"packet delay: {why}")
    if why:
        print(f"provider distance: {LatencyRelay.method} ({why})", file=sys.stderr)
        return LatencyRelay(("127.0.0.1", port), rtt_ms).start()
    return PacketDelay(port, rtt_ms).start()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True, help="local TCP port to put at a distance")
    ap.add_argument("--rtt", type=float, required=True, help="round-trip time to add, ms")
    ap.add_argument("--queue", type=int, default=4242, help="NFQUEUE number")
    a = ap.parse_args()
    serve(a.port, a.rtt, a.queue)
