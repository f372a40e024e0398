"""A hard daily cap on what turnout itself spends (shadow and judge calls), reserved before each call.

Like a budget: a call reserves its worst case first and is refused when spent + reserved + worst
case would pass the cap, so concurrent calls cannot overshoot; it settles to its real cost after.
Thread-safe: shadow calls run on turnout's outbound thread. The day is a UTC calendar day.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .windows import window_end


@dataclass
class Reservation:
    usd: float
    day_end: float
    settled: bool = False


class DailyCap:
    def __init__(self, usd_per_day: float) -> None:
        self.limit = usd_per_day
        self.spent = 0.0
        self.reserved = 0.0
        self.refused = 0
        self._day_end = 0.0
        self._lock = threading.Lock()

    def _roll(self, now: float) -> None:
        if now >= self._day_end:
            self._day_end = window_end("day", now)
            self.spent = 0.0
            self.reserved = 0.0

    def reserve(self, usd: float, now: float) -> Reservation | None:
        """A reservation of `usd`, or None (counted) when it would pass the cap."""
        with self._lock:
            self._roll(now)
            if self.spent + self.reserved + usd > self.limit:
                self.refused += 1
                return None
            self.reserved += usd
            return Reservation(usd, self._day_end)

    def settle(self, res: Reservation, actual_usd: float) -> None:
        """Replace the reservation by what the call cost (idempotent)."""
        with self._lock:
            if res.settled:
                return
            res.settled = True
            if res.day_end == self._day_end:  # not a reservation of a day that has rolled over
                self.reserved = max(0.0, self.reserved - res.usd)
                self.spent += actual_usd

    def add_spent(self, usd: float, now: float) -> None:
        """Spend from before a restart (rebuilt from the ledger)."""
        with self._lock:
            self._roll(now)
            self.spent += usd
