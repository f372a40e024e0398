"""Clients that send what an SDK would refuse to: raw bytes in headers, bodies of any shape, HTTP/2
without a content-length. Each goes through the proxy as a real client does (CONNECT, then TLS
trusting turnout's CA from `turnout env`)."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import NamedTuple


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def tls_context(bundle: str, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=bundle)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https(
    proxy_port: int,
    bundle: str,
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str | bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    host: str = "api.openai.com",
    timeout: float = 30,
) -> Answer:
    """One HTTP/1.1 request through the proxy; header values may be raw bytes."""
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=tls_context(bundle), timeout=timeout)
    conn.set_tunnel(host, 443)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def h2_post_without_length(
    proxy_port: int, bundle: str, path: str, body: bytes, headers: list[tuple[str, str]], host: str = "api.openai.com"
) -> Answer:
    """An HTTP/2 POST whose body is framed only by DATA frames (no content-length), as h2 allows."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=30)
    sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("proxy closed the CONNECT")
        reply += chunk
    assert reply.split()[1] == b"200", reply
    tls = tls_context(bundle, ["h2"]).wrap_socket(sock, server_hostname=host)
    assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", path), (":authority", host), (":scheme", "https"), *headers])
    conn.send_data(sid, body, end_stream=True)
    tls.sendall(conn.data_to_send())
    status, resp_headers, data = 0, {}, b""
    done = False
    while not done:
        chunk = tls.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                resp_headers = {
                    k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                    for k, v in ev.headers
                }
                status = int(resp_headers[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                done = True
        tls.sendall(conn.data_to_send())
    tls.close()
    return Answer(status, resp_headers, data)
