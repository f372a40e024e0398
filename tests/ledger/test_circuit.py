"""The failover circuit, on an injected clock."""

from __future__ import annotations

from turnout.ledger.circuit import CLOSED, HALF_OPEN, OPEN, Circuit
from turnout.ledger.failover_config import CircuitConfig


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_failures_in_the_window_and_one_probe_closes_it():
    clock = Clock()
    c = Circuit(CircuitConfig(failures=3, window=10, cooldown=5), clock)
    assert c.failure() is None and c.failure() is None
    clock.t = 11  # the first two fell out of the window
    assert c.failure() is None and c.allow()
    assert c.failure() is None and c.failure() == OPEN and not c.allow()
    clock.t = 16
    assert c.allow() and c.state == HALF_OPEN
    assert not c.allow()  # one probe at a time
    assert c.success() == CLOSED and c.allow()


def test_a_failed_probe_reopens_and_a_lost_probe_does_not_wedge_it():
    clock = Clock()
    c = Circuit(CircuitConfig(failures=1, window=10, cooldown=5), clock)
    assert c.failure() == OPEN
    clock.t = 5
    assert c.allow() and c.failure() == OPEN and not c.allow()
    clock.t = 10
    assert c.allow()  # a probe whose outcome never came back …
    clock.t = 15
    assert c.allow()  # … lets another through a cooldown later


def test_retry_after_opens_it_for_that_long():
    clock = Clock()
    c = Circuit(CircuitConfig(failures=100, window=10, cooldown=5), clock)
    assert c.failure(retry_after=30) == OPEN
    clock.t = 29
    assert not c.allow()
    clock.t = 30
    assert c.allow()
