"""Score → measured pass rate, per group of a deployment's own traffic.

A difficulty score reads as a probability only on the data it was fitted to. On a team's traffic
the cheaper model's pass rate at a given score differs by task, by feature and by prompt template
(a template whose answers are labels passes far more often than one asking for prose). So one
logistic fit on held-out shadow verdicts maps logit(score) to pass, with an intercept and a slope
offset for every group that has at least ``min_rows`` verdicts. The L2 penalty pulls each offset
towards zero: a group with little evidence stays near the global mapping, and a group never seen
gets the global mapping unchanged. Offsets add up, so a request's task, feature and template each
contribute what their own evidence says.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MIN_GROUP_ROWS = 20  # verdicts a group needs before it gets offsets of its own
EPS = 1e-6
KINDS = ("task", "feature", "template")


def group_keys(task: str | None, feature: str | None = None, template: str | None = None) -> tuple[str, ...]:
    """The calibration groups of one request: ``task:qa``, ``feature:billing``, ``template:<fingerprint>``."""
    return tuple(f"{kind}:{value}" for kind, value in zip(KINDS, (task, feature, template)) if value)


def _logit(p: float) -> float:
    p = min(1.0 - EPS, max(EPS, p))
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class PassCalibration:
    intercept: float
    slope: float
    groups: Mapping[str, tuple[float, float, int]]  # key -> (intercept offset, slope offset, verdicts)
    n_rows: int

    def probability(self, score: float, keys: Iterable[str] = ()) -> float:
        """The measured pass rate at `score` for a request in groups `keys` (unknown keys add nothing)."""
        a, b = self.intercept, self.slope
        for k in keys:
            g = self.groups.get(k)
            if g is not None:
                a, b = a + g[0], b + g[1]
        return _sigmoid(a + b * _logit(score))

    def evidence(self, keys: Iterable[str]) -> list[tuple[str, int]]:
        """The groups among `keys` that have their own offsets, with how many verdicts set them."""
        return [(k, self.groups[k][2]) for k in keys if k in self.groups]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "logistic on logit(score), additive offsets per group, L2 towards the global fit",
            "intercept": self.intercept,
            "slope": self.slope,
            "n_rows": self.n_rows,
            "groups": {k: {"intercept": a, "slope": b, "rows": n} for k, (a, b, n) in sorted(self.groups.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PassCalibration":
        groups = {str(k): (float(g["intercept"]), float(g["slope"]), int(g["rows"])) for k, g in data["groups"].items()}
        return cls(float(data["intercept"]), float(data["slope"]), groups, int(data["n_rows"]))


def fit_pass_calibration(
    scores: Sequence[float],
    passes: Sequence[bool],
    keys: Sequence[Sequence[str]],
    *,
    min_rows: int = MIN_GROUP_ROWS,
    c: float = 1.0,
) -> PassCalibration:
    """Fit on held-out verdicts (never on the rows the score was trained on): `keys[i]` are row i's groups."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    n = len(scores)
    if n == 0:
        raise ValueError("no verdicts to calibrate on")
    y = np.asarray([1 if p else 0 for p in passes])
    if y.min() == y.max():  # one class: the smoothed rate, whatever the score
        rate = (y.sum() + 1) / (n + 2)
        return PassCalibration(round(_logit(rate), 5), 0.0, {}, n)
    counts = Counter(k for row in keys for k in set(row))
    groups = sorted(k for k, m in counts.items() if m >= min_rows)
    col = {k: i for i, k in enumerate(groups)}
    z = np.asarray([_logit(s) for s in scores])
    x = np.zeros((n, 1 + 2 * len(groups)))
    x[:, 0] = z
    for i, row in enumerate(keys):
        for k in set(row):
            j = col.get(k)
            if j is not None:
                x[i, 1 + 2 * j] = 1.0
                x[i, 2 + 2 * j] = z[i]
    fit = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    w = fit.coef_[0]
    offsets = {k: (round(float(w[1 + 2 * j]), 5), round(float(w[2 + 2 * j]), 5), counts[k]) for k, j in col.items()}
    return PassCalibration(round(float(fit.intercept_[0]), 5), round(float(w[0]), 5), offsets, n)


def calibration_error(predicted: Sequence[float], passes: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error: |mean predicted − measured pass rate| per probability bin, weighted by rows."""
    buckets: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    for p, y in zip(predicted, passes):
        buckets[min(bins - 1, int(p * bins))].append((p, 1.0 if y else 0.0))
    n = len(predicted)
    if not n:
        return 0.0
    return round(
        sum(len(b) / n * abs(sum(p for p, _ in b) / len(b) - sum(y for _, y in b) / len(b)) for b in buckets if b), 4
    )


__all__ = ["PassCalibration", "fit_pass_calibration", "group_keys", "calibration_error", "MIN_GROUP_ROWS"]
