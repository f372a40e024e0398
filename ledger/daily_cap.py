"""A hard daily cap on what turnout itself spends (shadow and judge calls), reserved before each call.

Like a budget: a call reserves its worst case first and is refused when spent + reserved + worst
case would pass the cap, so concurrent calls cannot overshoot; it settles to its real cost after.
Thread-safe: shadow calls run on turnout's outbound thread. The day is a UTC calendar day. Amounts
are kept in integer micro-dollars (a reservation rounds up), so no sum of floats drifts past the cap.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .windows import window_end

MICROS = 1_000_000


def micros(usd: float, *, up: bool = False) -> int:
    return math.ceil(usd * MICROS - 1e-6) if up else round(usd * MICROS)


@dataclass
class Reservation:
    micros: int
    day_end: float
    settled: bool = False


class DailyCap:
    def __init__(self, usd_per_day: float) -> None:
        self.limit = micros(usd_per_day)
        self._spent = 0
        self._reserved = 0
        self.refused = 0
        self._day_end = 0.0
        self._lock = threading.Lock()

    @property
    def spent(self) -> float:
        return self._spent / MICROS

    @property
    def reserved(self) -> float:
        return self._reserved / MICROS

    def _roll(self, now: float) -> None:
        if now >= self._day_end:
            self._day_end = window_end("day", now)
            self._spent = 0
            self._reserved = 0

    def reserve(self, usd: float, now: float) -> Reservation | None:
        """A reservation of `usd`, or None (counted) when it would pass the cap."""
        amount = micros(usd, up=True)
        with self._lock:
            self._roll(now)
            if self._spent + self._reserved + amount > self.limit:
                self.refused += 1
                return None
            self._reserved += amount
            return Reservation(amount, self._day_end)

    def settle(self, res: Reservation, actual_usd: float) -> None:
        """Replace the reservation by what the call cost (idempotent)."""
        with self._lock:
            if res.settled:
                return
            res.settled = True
            if res.day_end == self._day_end:  # not a reservation of a day that has rolled over
                self._reserved = max(0, self._reserved - res.micros)
                self._spent += micros(actual_usd)

    def add_spent(self, usd: float, now: float) -> None:
        """Spend from before a restart (rebuilt from the ledger)."""
        with self._lock:
            self._roll(now)
            self._spent += micros(usd)
