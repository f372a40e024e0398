"""Intercept's layer choice: provider tunnels go on to mitmproxy's TLS interception, every other one is relayed."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.log import LegacyLogEvents
from mitmproxy.connection import Client, Server
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.test import taddons

from turnout.addons.intercept import Intercept, excluded_by_user_rules


def decide(
    address: tuple[str, int] | None, data: bytes = b"\x16\x03\x01\x00\x05hello", transport: str = "tcp", **options
) -> layer.Layer | None:
    """The layer Intercept and then mitmproxy's NextLayer addon choose for a tunnel's first bytes."""
    return asyncio.run(_decide(address, data, transport, **options))  # mitmproxy's log handler wants a loop


async def _decide(address: tuple[str, int] | None, data: bytes, transport: str, **options) -> layer.Layer | None:
    stock, intercept = NextLayer(), Intercept()
    with taddons.context(stock, intercept) as tctx:
        tctx.configure(intercept, turnout_hosts=["api.openai.com", "api.anthropic.com"], **options)
        client = Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), transport_protocol=transport)
        context = Context(client, tctx.options)
        context.server = Server(address=address)
        # inside a CONNECT tunnel: the proxy mode's layer, then the HTTP layer that answered the CONNECT
        context.layers = [modes.HttpProxy(context), layers.HttpLayer(context, HTTPMode.regular)]
        nl = layer.NextLayer(context)
        nl.data_client = lambda: data  # type: ignore[method-assign]
        nl.data_server = lambda: b""  # type: ignore[method-assign]
        intercept.next_layer(nl)  # `turnout proxy` loads turnout as a script: before mitmproxy's NextLayer
        stock.next_layer(nl)
        master = tctx.master
    for handler in logging.getLogger().handlers[:]:  # taddons leaves its master's log handler behind
        if isinstance(handler, LegacyLogEvents) and handler.master is master:
            logging.getLogger().removeHandler(handler)
    return nl.layer


def test_provider_tunnels_are_left_to_mitmproxys_tls_interception():
    assert isinstance(decide(("api.openai.com", 443)), layers.ServerTLSLayer)
    assert isinstance(decide(("API.Anthropic.com", 443)), layers.ServerTLSLayer)


def test_any_other_tunnel_is_relayed_untouched_before_its_first_bytes_are_read():
    relay = decide(("example.com", 443))
    assert isinstance(relay, layers.TCPLayer) and relay.flow is None  # ignore=True: no flow is even made
    assert isinstance(decide(("10.0.0.7", 5432), data=b"\x00\x00\x00\x08"), layers.TCPLayer)  # not TLS, not HTTP
    assert isinstance(decide(("api.openai.com.evil.test", 443)), layers.TCPLayer)  # the whole name, not a prefix


def test_a_connection_without_a_destination_yet_is_not_touched():
    # a new client connection: the proxy protocol (CONNECT, absolute-form requests) comes first
    assert not isinstance(decide(None, data=b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"), layers.TCPLayer)


def test_a_udp_destination_is_left_to_mitmproxy():
    assert not isinstance(decide(("10.0.0.53", 53), data=b"\x12\x34\x01\x00", transport="udp"), layers.TCPLayer)


def test_provider_hosts_the_users_rules_would_not_intercept_are_named():
    hosts = ["api.openai.com", "api.anthropic.com"]
    assert excluded_by_user_rules(hosts, [], []) == []
    assert excluded_by_user_rules(hosts, ["openai"], []) == ["api.anthropic.com"]
    assert excluded_by_user_rules(hosts, [], [r"^api\.openai\.com:443$"]) == ["api.openai.com"]
    assert excluded_by_user_rules(hosts, ["API\\.OpenAI", "anthropic"], ["example"]) == []


def test_the_users_own_allow_or_ignore_hosts_decide_instead():
    assert not isinstance(decide(("example.com", 443), allow_hosts=["example"]), layers.TCPLayer)
    relayed = decide(("api.openai.com", 443), data=b"\x00\x01", ignore_hosts=["openai"])
    assert isinstance(relayed, layers.TCPLayer)  # mitmproxy's rule, not ours: the user ignored the provider
