"""Dispatch: a cheaper way for mitmproxy to hand each event to its addons.

mitmproxy's `AddonManager.trigger_event` enters a context manager, creates and awaits a coroutine
and walks two generators for *every* addon on *every* event, whether or not the addon has a hook
for it. mitmdump runs ~45 addons and each request raises eight events (four hooks, each followed
by `update`), so that walk is a large share of bare mitmproxy's CPU per request
(docs/performance.md).

`Dispatch` replaces the method on its own master's AddonManager (nothing global, nothing in
mitmproxy's files) with one that keeps the stock semantics — same order (pre-order over each
addon's `addons` children), errors logged per top-level addon by mitmproxy's own `safecall`,
`AddonHalt` ending the event, async hooks awaited — but walks the addon tree once per event name,
not once per event: per event name it keeps each top-level addon's hook callables (its own and its
children's, in order) and skips the addons that have none. That plan is rebuilt whenever an addon is
added, registered or removed (script loads and reloads go through those) and at every lifecycle event
(`load`, `configure`, `running`, `done`; a script loader reorders its scripts only in `configure`).
What it does not see is an addon gaining, losing or swapping a hook attribute, or a child list
changing behind the manager's back, between two of those points; turnout's addons do neither.
It also replaces `handle_lifecycle` (the hook, then `update` for a flow), so that neither reads a
hook's arguments through `dataclasses.fields()` on every event: their names are kept per hook class.
Errors are caught with a plain `try` and only then handed to `safecall`, which logs them as usual.
`--set turnout_fast_dispatch=false` restores mitmproxy's own methods.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any, Callable

from mitmproxy import ctx, exceptions, flow, hooks
from mitmproxy.addonmanager import AddonManager, safecall


def hook_funcs(addon: Any, name: str) -> list[Callable[..., Any]]:
    """The callables for hook `name` in `addon` and its children, as `AddonManager._iter_hooks` finds them."""
    if not hasattr(addon, "addons"):  # the common case: a leaf addon, no generator needed
        func = getattr(addon, name, None)
        if not func or isinstance(func, types.ModuleType):
            return []
        if not callable(func):
            raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")
        return [func]
    out: list[Callable[..., Any]] = []
    _collect(addon, name, out)
    return out


def _collect(addon: Any, name: str, out: list[Callable[..., Any]]) -> None:
    """Pre-order over `addon` and its `addons`, like mitmproxy's `traverse`, without a generator per level."""
    func = getattr(addon, name, None)
    # a module that happens to share a hook's name (`from mitmproxy import log`) is not a hook
    if func and not isinstance(func, types.ModuleType):
        if not callable(func):
            raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")
        out.append(func)
    if hasattr(addon, "addons"):
        for child in addon.addons:
            _collect(child, name, out)


_ARG_NAMES: dict[type, tuple[str, ...]] = {}


def hook_args(event: hooks.Hook) -> list[Any]:
    """`event.args()` without `dataclasses.fields()` on every call (its field names, once per hook class)."""
    cls = type(event)
    names = _ARG_NAMES.get(cls)
    if names is None:
        if cls.args is not hooks.Hook.args:  # a hook with its own args(): ask it every time
            return event.args()
        names = _ARG_NAMES[cls] = tuple(f.name for f in dataclasses.fields(event))  # type: ignore[arg-type]
    return [getattr(event, n) for n in names]


# Events after which the set of addons, or their options, may differ: the visit lists start afresh.
LIFECYCLE_EVENTS = frozenset({"load", "configure", "running", "done"})
_VISIT = "_turnout_visit"  # the per-manager cache: event name -> visit_plan


def visit_plan(manager: AddonManager, name: str) -> list[tuple[Any, list[Callable[..., Any]] | None]]:
    """(top-level addon, its and its children's callables for hook `name`) in chain order, for the
    addons that have any; None where looking them up raised (looked up again at each event, so that
    mitmproxy's `safecall` reports it there, as stock does)."""
    try:
        chain = list(manager.chain)
    except Exception:  # noqa: BLE001 - defensive: the stock walk would fail the same way
        return []
    plan: list[tuple[Any, list[Callable[..., Any]] | None]] = []
    for addon in chain:
        try:
            funcs: list[Callable[..., Any]] | None = hook_funcs(addon, name)
        except Exception:  # noqa: BLE001 - reported at the event, under safecall
            funcs = None
        if funcs != []:
            plan.append((addon, funcs))
    return plan


def forget_visits(manager: AddonManager) -> None:
    visits = manager.__dict__.get(_VISIT)
    if visits is not None:
        visits.clear()


async def trigger_event(self: AddonManager, event: hooks.Hook) -> None:
    """Drop-in for `AddonManager.trigger_event` (bound to one instance by `Dispatch`)."""
    name = event.name
    visits: dict[str, list[tuple[Any, list[Callable[..., Any]] | None]]] = self.__dict__.setdefault(_VISIT, {})
    if name in LIFECYCLE_EVENTS:
        visits.clear()
    plan = visits.get(name)
    if plan is None:
        plan = visits[name] = visit_plan(self, name)
    if not plan:
        return
    args = hook_args(event)  # the same objects for every hook: computed once per event
    for addon, funcs in plan:
        try:
            for func in funcs if funcs is not None else hook_funcs(addon, name):
                res = func(*args)
                if res is not None and inspect.isawaitable(res):
                    await res
        except exceptions.AddonHalt:
            return
        except Exception:  # noqa: BLE001 - what `with safecall():` does, without entering it for every addon
            with safecall():  # logs "Addon error: …" with the traceback; lets OptionsError through
                raise


async def handle_lifecycle(self: AddonManager, event: hooks.Hook) -> None:
    """Drop-in for `AddonManager.handle_lifecycle`: the hook, then `update` for a flow hook."""
    message = hook_args(event)[0]
    await self.trigger_event(event)
    if isinstance(message, flow.Flow):
        await self.trigger_event(hooks.UpdateHook([message]))


def _forgetting(manager: AddonManager, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, but the visit lists are rebuilt after it changed the addons."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            forget_visits(manager)

    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


_MUTATORS = ("add", "register", "remove", "clear")


class Dispatch:
    def __init__(self) -> None:
        self.manager: AddonManager | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_fast_dispatch",
            bool,
            True,
            "Dispatch mitmproxy events only to addons that handle them (same order and error handling as "
            "mitmproxy's own dispatch, about a third less of mitmproxy's CPU per request). false: mitmproxy's own method.",
        )
        self.manager = ctx.master.addons
        self._install(True)  # from the first event on; `configure` undoes it if the option says so

    def configure(self, updated: set[str]) -> None:
        if "turnout_fast_dispatch" in updated:
            self._install(ctx.options.turnout_fast_dispatch)

    def _install(self, fast: bool) -> None:
        m = self.manager
        if m is None:
            return
        for attr in ("trigger_event", "handle_lifecycle", *_MUTATORS, _VISIT):
            m.__dict__.pop(attr, None)
        if fast:
            m.trigger_event = types.MethodType(trigger_event, m)  # type: ignore[method-assign]
            m.handle_lifecycle = types.MethodType(handle_lifecycle, m)  # type: ignore[method-assign]
            for attr in _MUTATORS:
                setattr(m, attr, _forgetting(m, getattr(m, attr)))

    def done(self) -> None:
        self._install(False)
