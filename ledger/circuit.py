"""A provider's health for failover: closed → open after N failures in a window → half-open probe.

While a provider's circuit is open, failover sends its calls straight to the next healthy target
instead of paying the failure first. After `cooldown` (or a 429's `retry-after`) one call is let
through as a probe: its success closes the circuit, its failure opens it again. Thread-safe (the
relay runs on its own thread; the metrics read from mitmproxy's); the clock is injected for tests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .failover_config import CircuitConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class Circuit:
    def __init__(self, cfg: CircuitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.state = CLOSED
        self._failures: deque[float] = deque()
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a call may go to this provider now (an open circuit past its cooldown lets one probe)."""
        with self._lock:
            if self.state == CLOSED:
                return True
            now = self.clock()
            if self.state == OPEN and now >= self._open_until:
                self.state, self._probing = HALF_OPEN, True
                self._open_until = now + self.cfg.cooldown  # a probe that never reports lets another through then
                return True
            if self.state == HALF_OPEN and now >= self._open_until:
                self._open_until = now + self.cfg.cooldown
                return True
            return False

    def success(self) -> str | None:
        """Record a success; the new state when it changed."""
        with self._lock:
            self._probing = False
            self._failures.clear()
            if self.state != CLOSED:
                self.state = CLOSED
                return CLOSED
            return None

    def failure(self, retry_after: float | None = None) -> str | None:
        """Record a failure (a 429's `retry-after` opens the circuit for that long); the new state when it changed."""
        with self._lock:
            now = self.clock()
            self._failures.append(now)
            while self._failures and self._failures[0] < now - self.cfg.window:
                self._failures.popleft()
            trips = self.state == HALF_OPEN or len(self._failures) >= self.cfg.failures or retry_after is not None
            if not trips:
                return None
            was = self.state
            self.state, self._probing = OPEN, False
            self._open_until = now + (retry_after if retry_after is not None else self.cfg.cooldown)
            return OPEN if was != OPEN else None
