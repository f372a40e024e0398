"""Task accuracy on API-style requests (`router/data/task_eval_api.jsonl`, see router/data/README.md).

The set is split in two halves by a hash of each row's id: the rules in router/tasks.py were tuned
looking at the *tuning* half only, and the learned model (router/task_model.py) trained on it (and on
task_train_api.jsonl); the *held-out* half is the honest number for both.
"""

from __future__ import annotations

import collections
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .features import extract_features
from .task_model import task_of
from .tasks import classify_task

EVAL_SET = Path(__file__).parent / "data" / "task_eval_api.jsonl"


@dataclass(frozen=True)
class TaskAccuracy:
    half: str
    n: int
    correct: int
    confusions: list[tuple[str, str, int]] = field(default_factory=list)  # (expected, got, count), commonest first

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def half_of(row_id: str) -> str:
    return "tuning" if zlib.crc32(row_id.encode()) % 2 == 0 else "held-out"


def task_accuracy(path: Path = EVAL_SET, *, rules_only: bool = False) -> dict[str, TaskAccuracy]:
    """Accuracy per half of the shipped classifier (the learned model over the rules), or of the rules alone."""
    classify = (lambda f: classify_task(f)) if rules_only else task_of
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = {}
    for half in ("tuning", "held-out"):
        sel = [r for r in rows if half_of(r["id"]) == half]
        conf: collections.Counter[tuple[str, str]] = collections.Counter()
        correct = 0
        for r in sel:
            got = classify(extract_features(r["body"]))
            if got == r["task"]:
                correct += 1
            else:
                conf[(r["task"], got)] += 1
        out[half] = TaskAccuracy(half, len(sel), correct, [(a, b, n) for (a, b), n in conf.most_common()])
    return out
