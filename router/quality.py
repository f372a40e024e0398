"""Quality evidence from shadow verdicts: Wilson bounds, recommendations, a rolling monitor.

Pass rates count decided verdicts only (pass and fail); a tie (the judge's two orders disagreed)
and unknown are no evidence either way.
"""

from __future__ import annotations

import collections
import math
import dataclasses
from dataclasses import dataclass, field
from typing import Any

Z95 = 1.959963984540054


def wilson(passed: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of a pass rate; (0, 1) with no evidence."""
    if n <= 0:
        return 0.0, 1.0
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def recommend(passed: int, decided: int, target: float) -> str:
    """`route` when the lower bound clears the target, `keep` when the upper bound misses it, else
    `not enough evidence yet`."""
    low, high = wilson(passed, decided)
    if decided and low >= target:
        return "route"
    if decided and high < target:
        return "keep"
    return "not enough evidence yet"


@dataclass
class RollingQuality:
    """The last `window` decided verdicts of one group (model pair × task), for monitoring."""

    window: int = 200
    verdicts: collections.deque[bool] = field(default_factory=collections.deque)

    def add(self, passed: bool) -> None:
        self.verdicts.append(passed)
        while len(self.verdicts) > self.window:
            self.verdicts.popleft()

    @property
    def rate(self) -> float | None:
        return sum(self.verdicts) / len(self.verdicts) if self.verdicts else None

    def bounds(self) -> tuple[float, float]:
        return wilson(sum(self.verdicts), len(self.verdicts))

    def degraded(self, target: float) -> bool:
        """The evidence says the pass rate is below target: its upper bound is."""
        return bool(self.verdicts) and self.bounds()[1] < target

    def recovered(self, target: float) -> bool:
        return bool(self.verdicts) and self.bounds()[0] >= target


def apply_evidence(decision: Any, evidence: tuple[int, int] | None, target: float) -> Any:
    """The evidence policy: a group's measured verdicts (passed, decided) decide where they are conclusive —
    route when the lower bound clears `target`, keep when the upper bound misses it — and the score's
    decision stands where they are not (no evidence yet, or not enough). `decision`: a RoutingDecision."""
    if decision.decision not in ("route", "keep") or decision.candidate is None or not evidence:
        return decision
    passed, decided = evidence
    if not decided:
        return decision
    low, high = wilson(passed, decided)
    if low >= target:
        return dataclasses.replace(
            decision, decision="route", would_route_to=decision.candidate,
            reason=f"evidence: pass rate {passed}/{decided}, 95% lower bound {low:.2f} >= {target:.2f}",
        )  # fmt: skip
    if high < target:
        return dataclasses.replace(
            decision, decision="keep", would_route_to=None,
            reason=f"evidence: pass rate {passed}/{decided}, 95% upper bound {high:.2f} < {target:.2f}",
        )  # fmt: skip
    return decision
