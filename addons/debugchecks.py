"""DebugChecks: mitmproxy's debug-only type checks, off in turnout's process unless asked for.

mitmproxy type-checks every field of every request and response it builds or parses
(`MessageData.__post_init__`, defined only `if __debug__`: `python -O` compiles it out). On the
benchmark's workload that is a measurable share of what turnout spends per request. The
check catches addons that construct messages with fields of the wrong type; turnout builds its
answers with mitmproxy's `Response.make`, which converts what it is given. So turnout turns the
check off for its process — as `-O` would, but without also dropping every `assert` of every
library — and puts it back on `done`. `--set turnout_debug_checks=true` keeps it on.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import ctx, http

_ORIGINAL = http.MessageData.__dict__.get("__post_init__")  # None under `python -O`


def _no_check(self: Any) -> None:
    return None


def set_message_checks(on: bool) -> None:
    """Turn mitmproxy's per-message type check on or off for the whole process."""
    if _ORIGINAL is None:
        return
    http.MessageData.__post_init__ = _ORIGINAL if on else _no_check  # type: ignore[method-assign]


class DebugChecks:
    def load(self, loader) -> None:
        loader.add_option(
            "turnout_debug_checks",
            bool,
            False,
            "Keep mitmproxy's debug-only type check of every request and response field (what `python -O` removes).",
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_debug_checks" in updated:
            set_message_checks(ctx.options.turnout_debug_checks)

    def done(self) -> None:
        set_message_checks(True)
