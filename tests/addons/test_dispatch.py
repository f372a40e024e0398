"""The fast event dispatch behaves exactly like mitmproxy's own: order, children, errors, halts, async hooks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import types

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.addonmanager import AddonManager
from mitmproxy.test import taddons, tflow

from turnout.addons import dispatch


class Recorder:
    def __init__(self, log: list[str], name: str, children: list[object] | None = None) -> None:
        self.log, self.name = log, name
        if children is not None:
            self.addons = children

    def request(self, flow) -> None:
        self.log.append(f"{self.name}.request")

    def update(self, flows) -> None:
        self.log.append(f"{self.name}.update:{len(flows)}")


class AsyncHook:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def request(self, flow) -> None:
        await asyncio.sleep(0)
        self.log.append("async.request")


class Raises:
    def __init__(self, log: list[str], exc: BaseException) -> None:
        self.log, self.exc = log, exc

    def request(self, flow) -> None:
        self.log.append("raises.request")
        raise self.exc


class ModuleNamedLikeAHook:
    request = types  # `from mitmproxy import log`-style attribute: not a hook


class NotCallable:
    request = 42  # mitmproxy logs "not callable" and goes on with the next addon


def chain(log: list[str], *, halt: bool = False) -> list[object]:
    nested = Recorder(log, "parent", [Recorder(log, "child1", [Recorder(log, "grandchild")]), Recorder(log, "child2")])
    middle: object = Raises(log, exceptions.AddonHalt() if halt else ValueError("boom"))
    return [
        Recorder(log, "first"),
        ModuleNamedLikeAHook(),
        NotCallable(),
        nested,
        middle,
        AsyncHook(log),
        Recorder(log, "last"),
    ]


def run_events(*, halt: bool = False) -> list[str]:
    log: list[str] = []
    with taddons.context() as tctx:
        for mode in ("stock", "fast"):  # one master (mitmproxy's log handler is per master), two managers
            manager = AddonManager(tctx.master)
            for a in chain(log, halt=halt):
                manager.add(a)
            if mode == "fast":
                manager.trigger_event = types.MethodType(dispatch.trigger_event, manager)  # type: ignore[method-assign]
                manager.handle_lifecycle = types.MethodType(dispatch.handle_lifecycle, manager)  # type: ignore[method-assign]
            log.append(f"-- {mode}")
            tctx.master.event_loop.run_until_complete(manager.handle_lifecycle(HttpRequestHook(tflow.tflow())))
    return log


@pytest.mark.parametrize("halt", [False, True])
def test_fast_dispatch_calls_the_same_hooks_in_the_same_order(halt: bool) -> None:
    log = run_events(halt=halt)
    split = log.index("-- fast")
    stock, fast = log[1:split], log[split + 1 :]
    assert fast == stock
    assert stock[:4] == ["first.request", "parent.request", "child1.request", "grandchild.request"]
    if halt:
        assert "async.request" not in fast  # AddonHalt ends the event for everyone after it
    else:
        assert fast[4:8] == [
            "child2.request",
            "raises.request",
            "async.request",
            "last.request",
        ]  # an error is logged, the chain goes on
        assert "last.update:1" in fast  # handle_lifecycle's `update` follows the hook


def test_an_addon_error_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        run_events()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("Addon error: boom") == 2  # stock and fast alike
    assert sum("not callable" in m for m in messages) == 2


def test_a_non_callable_hook_is_reported_like_mitmproxy_does(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        request = 42

    with pytest.raises(exceptions.AddonManagerError, match="not callable"):
        dispatch.hook_funcs(Broken(), "request")


def test_the_option_switches_back_to_mitmproxys_own_dispatch() -> None:
    d = dispatch.Dispatch()
    with taddons.context(d) as tctx:
        manager = tctx.master.addons
        assert manager.trigger_event.__func__ is dispatch.trigger_event
        assert manager.handle_lifecycle.__func__ is dispatch.handle_lifecycle
        tctx.configure(d, turnout_fast_dispatch=False)
        assert manager.trigger_event.__func__ is AddonManager.trigger_event
        assert manager.handle_lifecycle.__func__ is AddonManager.handle_lifecycle
        tctx.configure(d, turnout_fast_dispatch=True)
        assert manager.trigger_event.__func__ is dispatch.trigger_event
        d.done()
        assert manager.trigger_event.__func__ is AddonManager.trigger_event


def test_addons_added_or_removed_later_are_seen_at_once() -> None:
    d = dispatch.Dispatch()
    log: list[str] = []
    with taddons.context(d) as tctx:
        manager = tctx.master.addons
        loop = tctx.master.event_loop

        def fire() -> None:
            loop.run_until_complete(manager.trigger_event(HttpRequestHook(tflow.tflow())))

        first = Recorder(log, "first")
        manager.add(first)
        fire()
        late = Recorder(log, "late")
        manager.add(late)  # after the visit list for `request` was built
        fire()
        manager.remove(first)
        fire()
        assert log == ["first.request", "first.request", "late.request", "late.request"]


def test_script_loads_and_reorders_are_seen_at_the_next_event() -> None:
    """mitmproxy's script loader changes its children through the manager (Script.loadscript registers
    the new module) or in `configure` (reordering): the plan is rebuilt after either."""
    d = dispatch.Dispatch()
    log: list[str] = []
    with taddons.context(d) as tctx:
        manager = tctx.master.addons
        loader = Recorder(log, "loader", [])
        manager.add(loader)
        event = HttpRequestHook(tflow.tflow())

        def fire() -> None:
            tctx.master.event_loop.run_until_complete(manager.trigger_event(event))

        fire()
        script, other = Recorder(log, "script"), Recorder(log, "other")
        loader.addons = [script, other]
        manager.register(script)
        manager.register(other)
        fire()
        loader.addons = [other, script]  # ScriptLoader.configure reordering its scripts
        tctx.master.event_loop.run_until_complete(manager.trigger_event(hooks.ConfigureHook(set())))
        fire()
        assert log == ["loader.request"] + ["loader.request", "script.request", "other.request"] + [
            "loader.request", "other.request", "script.request"
        ]  # fmt: skip


def test_hook_args_are_the_stock_args_for_every_mitmproxy_hook() -> None:
    for name, cls in hooks.all_hooks.items():
        if name in ("load", "configure", "running", "done", "update"):
            continue
        values = {f.name: object() for f in dataclasses.fields(cls)}
        event = cls(**values)
        assert dispatch.hook_args(event) == event.args(), name
        assert dispatch.hook_args(event) == event.args(), name  # second call: from the per-class names


def test_an_options_error_from_a_hook_propagates_like_stock() -> None:
    class Strict:
        def request(self, flow) -> None:
            raise exceptions.OptionsError("bad option")

    with taddons.context() as tctx:
        for method in (AddonManager.trigger_event, dispatch.trigger_event):
            manager = AddonManager(tctx.master)
            manager.add(Strict())
            manager.trigger_event = types.MethodType(method, manager)  # type: ignore[method-assign]
            with pytest.raises(exceptions.OptionsError, match="bad option"):
                tctx.master.event_loop.run_until_complete(manager.trigger_event(HttpRequestHook(tflow.tflow())))
