"""Intercept's layer choice: provider tunnels go on to mitmproxy's TLS interception, every other one is relayed."""

from __future__ import annotations

from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.connection import Client, Server
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.test import taddons

from turnout.addons.intercept import Intercept

def decide(address: tuple[str, int] | None, data: bytes = b"\x16\x03\x01\x00\x05hello", **options) -> layer.Layer | None:
    """The layer mitmproxy's NextLayer addon and then Intercept choose for a tunnel's first bytes."""
    stock, intercept = NextLayer(), Intercept()
    with taddons.context(stock, intercept) as tctx:
        tctx.configure(intercept, turnout_hosts=["api.openai.com", "api.anthropic.com"], **options)
        context = Context(Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080)), tctx.options)
        context.server = Server(address=address)
        context.layers = [modes.HttpProxy(context)]
        nl = layer.NextLayer(context)
        nl.data_client = lambda: data  # type: ignore[method-assign]
        nl.data_server = lambda: b""  # type: ignore[method-assign]
        stock.next_layer(nl)
        intercept.next_layer(nl)
        return nl.layer


def test_provider_tunnels_are_left_to_mitmproxys_tls_interception():
    assert not isinstance(decide(("api.openai.com", 443)), layers.TCPLayer)
    assert not isinstance(decide(("API.Anthropic.com", 443)), layers.TCPLayer)


def test_any_other_tunnel_is_relayed_untouched_before_its_first_bytes_are_read():
    relay = decide(("example.com", 443))
    assert isinstance(relay, layers.TCPLayer) and relay.flow is None  # ignore=True: no flow is even made
    assert isinstance(decide(("10.0.0.7", 5432), data=b"\x00\x00\x00\x08"), layers.TCPLayer)  # not TLS, not HTTP
    assert isinstance(decide(("api.openai.com.evil.test", 443)), layers.TCPLayer)  # the whole name, not a prefix


def test_a_connection_without_a_destination_yet_is_not_touched():
    # a new client connection: the proxy protocol (CONNECT, absolute-form requests) comes first
    assert isinstance(decide(None, data=b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"), layers.HttpLayer)


def test_the_users_own_allow_or_ignore_hosts_decide_instead():
    assert not isinstance(decide(("example.com", 443), allow_hosts=["example"]), layers.TCPLayer)
    relayed = decide(("api.openai.com", 443), data=b"\x00\x01", ignore_hosts=["openai"])
    assert isinstance(relayed, layers.TCPLayer)  # mitmproxy's rule, not ours: the user ignored the provider
