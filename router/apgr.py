"""APGR: the routing-quality metric from RouteLLM (Ong et al., 2024).

A router orders requests by how much they need the strong model. Sending the
top fraction ``c`` of that order to the strong model and the rest to the weak
one yields a quality ``q(c)`` (mean correctness). PGR(c) — "performance gap
recovered" — normalises it: 0 at all-weak, 1 at all-strong. APGR is the area
under PGR over c in [0, 1], sampled at 101 points with the trapezoid rule.
A random order scores 0.5 in expectation; a perfect one approaches
1 + (share of requests where weak beats strong) / gap.

``score`` throughout is the router's estimate that the weak model does as well
as the strong one, so the strong model gets requests in ascending score order.
Ties are broken by input position so the metric is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

N_POINTS = 101


@dataclass(frozen=True)
class PGRCurve:
    fractions: tuple[float, ...]  # share sent to the strong model
    quality: tuple[float, ...]  # mean correctness at that share
    pgr: tuple[float, ...]
    q_strong: float
    q_weak: float


def _strong_order(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


def pgr_curve(
    scores: Sequence[float],
    strong_correct: Sequence[float],
    weak_correct: Sequence[float],
    n_points: int = N_POINTS,
) -> PGRCurve:
    n = len(scores)
    if n == 0 or len(strong_correct) != n or len(weak_correct) != n:
        raise ValueError("scores, strong_correct and weak_correct must be non-empty and equally long")
    strong = [float(x) for x in strong_correct]
    weak = [float(x) for x in weak_correct]
    q_strong = sum(strong) / n
    q_weak = sum(weak) / n
    gap = q_strong - q_weak
    order = _strong_order(scores)
    # gain[k] = sum of (strong - weak) over the k requests sent to strong
    gain = [0.0]
    for i in order:
        gain.append(gain[-1] + strong[i] - weak[i])
    fractions, quality, pgr = [], [], []
    for p in range(n_points):
        c = p / (n_points - 1)
        k = int(c * n + 0.5)
        q = q_weak + gain[k] / n
        fractions.append(c)
        quality.append(q)
        pgr.append((q - q_weak) / gap if gap != 0 else 0.0)
    return PGRCurve(tuple(fractions), tuple(quality), tuple(pgr), q_strong, q_weak)


def apgr(
    scores: Sequence[float],
    strong_correct: Sequence[float],
    weak_correct: Sequence[float],
    n_points: int = N_POINTS,
) -> float:
    """Area under the PGR curve (trapezoid over ``n_points`` evenly spaced fractions)."""
    curve = pgr_curve(scores, strong_correct, weak_correct, n_points)
    h = 1.0 / (n_points - 1)
    y = curve.pgr
    return sum((y[i] + y[i + 1]) * h / 2 for i in range(n_points - 1))
