"""Durations as people write them in config and on the command line: `"90s"`, `"15m"`, `"24h"`, `"7d"`.

One parser for budgets' rolling windows, the loop breaker's window, the proxy's timeouts and the
reports' `--since`.
"""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """`"90s"`, `"15m"`, `"24h"`, `"7d"` or a number of seconds; raises ValueError."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"not a duration: {value!r} (e.g. 30s, 15m, 24h, 7d)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"not a duration: {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
