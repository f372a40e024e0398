"""Dispatch: a cheaper way for mitmproxy to hand each event to its addons.

mitmproxy's `AddonManager.trigger_event` enters a context manager, creates and awaits a coroutine
and walks two generators for *every* addon on *every* event, whether or not the addon has a hook
for it. mitmdump runs ~45 addons and each request raises eight events (four hooks, each followed
by `update`), so that walk is a large share of bare mitmproxy's CPU per request
(docs/performance.md).

`Dispatch` replaces the method on its own master's AddonManager (nothing global, nothing in
mitmproxy's files) with one that keeps the stock semantics — same order (pre-order over each
addon's `addons` children), hook methods looked up at every event, errors logged per top-level
addon by mitmproxy's own `safecall`, `AddonHalt` ending the event, async hooks awaited — but
visits only the addons that can take the event: per event name it remembers which top-level
addons have that hook or have children (script loaders, whose scripts can come and go). That
list is rebuilt whenever an addon is added, registered or removed (script reloads included) and
at every lifecycle event (`load`, `configure`, `running`, `done`). The one thing it does not see
is a plain addon object gaining a hook attribute it did not have, between two of those points.
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
_VISIT = "_turnout_visit"  # the per-manager cache: event name -> top-level addons to visit


def visit_list(manager: AddonManager, name: str) -> list[Any]:
    """Top-level addons, in chain order, that have hook `name` or children that might."""
    try:
        return [a for a in manager.chain if hasattr(a, "addons") or getattr(a, name, None) is not None]
    except Exception:  # noqa: BLE001 - an addon whose attributes raise: visit all, let safecall report it
        return list(manager.chain)


def forget_visits(manager: AddonManager) -> None:
    visits = manager.__dict__.get(_VISIT)
    if visits is not None:
        visits.clear()


async def trigger_event(self: AddonManager, event: hooks.Hook) -> None:
    """Drop-in for `AddonManager.trigger_event` (bound to one instance by `Dispatch`)."""
    name = event.name
    visits: dict[str, list[Any]] = self.__dict__.setdefault(_VISIT, {})
    if name in LIFECYCLE_EVENTS:
        visits.clear()
    chain = visits.get(name)
    if chain is None:
        chain = visits[name] = visit_list(self, name)
    args: list[Any] | None = None
    for addon in chain:
        try:
            funcs: list[Callable[..., Any]] | None = hook_funcs(addon, name)
        except Exception:  # noqa: BLE001 - looked up again under safecall below, which logs it as mitmproxy does
            funcs = None
        if funcs == []:
            continue  # a script loader with no script handling this event: no coroutine, nothing to guard
        try:
            if funcs is None:
                funcs = hook_funcs(addon, name)
            if args is None:
                args = hook_args(event)  # the same objects for every hook: compute once per event
            for func in funcs:
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
