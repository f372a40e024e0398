"""The benchmark's network distance (tests/packet_delay.py) behaves like a network RTT ms away: connect
costs one RTT, a request and its answer one more, back-to-back segments arrive together, and nothing is
left behind in iptables."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from packet_delay import PacketDelay, unavailable  # tests/packet_delay.py

RTT_MS = 40.0


@pytest.fixture
def echo_port():
    """A TCP server that answers each message with five separate segments."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with conn:
                while data := conn.recv(1024):
                    for i in range(5):
                        conn.sendall(b"%d" % i + data[:1])

    threading.Thread(target=serve, daemon=True).start()
    yield port
    srv.close()


def _rules() -> str:
    return subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True).stdout


def test_connect_and_round_trip_cost_what_a_network_does(echo_port: int) -> None:
    why = unavailable()
    if why:
        pytest.skip(f"the packet delay cannot run here: {why}")
    delay = PacketDelay(echo_port, RTT_MS).start()
    try:
        t0 = time.perf_counter()
        c = socket.create_connection(("127.0.0.1", echo_port))
        connect_ms = (time.perf_counter() - t0) * 1000
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        c.sendall(b"x")
        got = c.recv(2)
        first_ms = (time.perf_counter() - t0) * 1000
        while len(got) < 10:
            got += c.recv(10)
        last_ms = (time.perf_counter() - t0) * 1000
        c.close()
    finally:
        delay.stop()
    assert RTT_MS * 0.95 <= connect_ms < RTT_MS * 1.5, connect_ms  # the SYN and SYN-ACK each wait RTT/2
    assert RTT_MS * 0.95 <= first_ms < RTT_MS * 1.5, first_ms
    # the five answers were sent back to back: held on the sender's side they would trickle in one hold apart
    assert last_ms - first_ms < RTT_MS / 4, (first_ms, last_ms)
    assert got == b"0x1x2x3x4x"
    assert delay.connections == 1
    assert f"--dport {echo_port}" not in _rules() and f"--sport {echo_port}" not in _rules()


def test_rules_left_by_a_killed_listener_are_cleared(echo_port: int) -> None:
    why = unavailable()
    if why:
        pytest.skip(f"the packet delay cannot run here: {why}")
    killed = PacketDelay(echo_port, RTT_MS).start()
    assert killed._proc is not None
    killed._proc.kill()  # no cleanup: its rules stay (bypassed, so traffic flows undelayed)
    killed._proc.wait()
    with pytest.raises(RuntimeError, match="figures are void"):  # a bench that used it says so
        killed.stop()
    assert f"--dport {echo_port}" in _rules()
    delay = PacketDelay(echo_port, RTT_MS).start()
    try:
        t0 = time.perf_counter()
        socket.create_connection(("127.0.0.1", echo_port)).close()
        assert (time.perf_counter() - t0) * 1000 >= RTT_MS * 0.95  # held by the new listener, not bypassed
    finally:
        delay.stop()
    assert f"--dport {echo_port}" not in _rules() and f"--sport {echo_port}" not in _rules()
