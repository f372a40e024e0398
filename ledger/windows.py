"""Calendar windows in UTC: when a budget's minute, hour, day or month starts and resets."""

from __future__ import annotations

import calendar
import datetime as dt

WINDOWS = ("minute", "hour", "day", "month")


def window_start(window: str, now: float) -> float:
    """Start of the calendar window (UTC) holding `now`."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    if window == "minute":
        t = t.replace(second=0, microsecond=0)
    elif window == "hour":
        t = t.replace(minute=0, second=0, microsecond=0)
    elif window == "day":
        t = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif window == "month":
        t = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown window {window!r}")
    return t.timestamp()


def window_end(window: str, now: float) -> float:
    """When the calendar window holding `now` resets (UTC)."""
    start = window_start(window, now)
    if window == "minute":
        return start + 60
    if window == "hour":
        return start + 3600
    if window == "day":
        return start + 86400
    t = dt.datetime.fromtimestamp(start, dt.UTC)
    days = calendar.monthrange(t.year, t.month)[1]
    return start + days * 86400
