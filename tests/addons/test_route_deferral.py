"""Observe mode classifies after the request has left: on a new upstream connection, once it is up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from mitmproxy import http
from mitmproxy.connection import Client, ConnectionState
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from turnout.addons import state
from turnout.addons.intercept import Intercept
from turnout.addons.route import Route
from turnout.addons.services import Services
from turnout.ledger.writer import LedgerWriter


def observed_flow(intercept: Intercept, client: Client | None = None) -> http.HTTPFlow:
    """A chat request as Intercept leaves it. Its server_conn stays closed, as in production: with
    turnout_upstream the request goes to another destination than the tunnel's."""
    f = tflow.tflow()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    f.request = http.Request.make("POST", "https://api.openai.com/v1/chat/completions", json.dumps(body).encode(),
                                  {"authorization": "Bearer sk-route-0000000001", "content-type": "application/json"})  # fmt: skip
    if client is not None:
        f.client_conn = client
    f.server_conn.state = ConnectionState.CLOSED
    intercept.request(f)
    return f


def connected(route: Route, f: http.HTTPFlow) -> None:
    route.server_connected(ServerConnectionHookData(server=f.server_conn, client=f.client_conn))


async def steps(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def with_route(check: Callable[[Intercept, Route], Awaitable[None]]) -> None:
    """Run `check` on a loop, with Intercept and an observing Route loaded."""
    services = Services(writer=LedgerWriter(":memory:"))  # a ledger to write to: else Intercept refuses (503)
    intercept, route = Intercept(services), Route(services)

    async def main() -> None:
        with taddons.context(intercept, route) as tctx:
            tctx.configure(route, turnout_mode="observe")
            await check(intercept, route)

    asyncio.run(main())


def test_on_a_new_upstream_connection_the_decision_waits_for_the_connection():
    async def check(intercept: Intercept, route: Route) -> None:
        f = observed_flow(intercept)
        llm = state.get(f)
        route.request(f)
        await steps(5)
        assert llm.pending and "decision" not in llm.columns  # not while mitmproxy dials the provider
        connected(route, f)
        await steps(2)
        assert not llm.pending and llm.columns["decision"] in ("route", "keep", "skip")
        assert route.after_connect == {}

    with_route(check)


def test_on_a_kept_alive_connection_it_follows_the_request_at_once():
    async def check(intercept: Intercept, route: Route) -> None:
        first = observed_flow(intercept)
        route.request(first)
        connected(route, first)
        f = observed_flow(intercept, client=first.client_conn)  # the next request on the same connection
        llm = state.get(f)
        route.request(f)
        assert llm.pending and route.after_connect == {}  # not inside the hook: the request leaves first
        await steps(2)
        assert not llm.pending and "decision" in llm.columns
        route.server_disconnected(ServerConnectionHookData(server=f.server_conn, client=f.client_conn))
        g = observed_flow(intercept, client=first.client_conn)  # the upstream closed: the next one dials again
        route.request(g)
        assert route.after_connect[g.client_conn.id] == [state.get(g)]

    with_route(check)


def test_flows_answered_without_an_upstream_connection_are_not_kept():
    async def check(intercept: Intercept, route: Route) -> None:
        first = observed_flow(intercept)
        for _ in range(100):  # cache hits on one connection that never dials: Record runs each one's work
            f = observed_flow(intercept, client=first.client_conn)
            route.request(f)
            state.run_pending(state.get(f))
        assert len(route.after_connect[first.client_conn.id]) == 1  # only the one still in flight

    with_route(check)


def test_a_connection_that_never_comes_up_leaves_nothing_behind():
    async def check(intercept: Intercept, route: Route) -> None:
        f = observed_flow(intercept)
        route.request(f)
        route.server_connect_error(ServerConnectionHookData(server=f.server_conn, client=f.client_conn))
        assert route.after_connect == {}
        state.run_pending(state.get(f))  # what Record does when it records the failed flow
        assert "decision" in state.get(f).columns
        g = observed_flow(intercept)
        route.request(g)
        connected(route, g)
        route.client_disconnected(g.client_conn)
        assert route.after_connect == {} and route.upstream_up == set()

    with_route(check)
