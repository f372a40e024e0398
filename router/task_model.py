"""A learned task classifier over the rules: hashed n-grams of where API calls put the instruction.

Features: words and word pairs of the system / developer prompt and of the edges of the user text
(two hashed namespaces), character trigrams of the start of the system prompt and of the user text's
first and last characters (they carry the instruction across languages, inflections and scripts that
words split badly, and in text with no spaces at all), the rules' own label (`rule=`,
router/tasks.py) and a few coarse counts; a multinomial
logistic regression over them (scikit-learn, at training time only) ships as plain JSON — per task,
the weights of the hashed features that matter — and is scored here with a few numpy operations. Without an
artifact (or when it does not load) the rules decide, as before.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from .features import RequestFeatures, hashed_word_ngram_counts, ngram_buckets, words_of
from .tasks import classify_task

N_BUCKETS = 2**18
MODEL_PATH = Path(__file__).parent / "model" / "tasks-v1.json"
SYSTEM_WORDS = 80
EDGE_CHARS = 300
_WORD = re.compile(r"\w+")


RULE_VALUE = 3.0  # the rules' label weighs as three words
CHAR_N = 3
CHAR_SYSTEM = 300  # characters of the system prompt whose trigrams count
CHAR_EDGE = 100  # characters at each end of the user text whose trigrams count
CHAR_VALUE = 0.5  # a trigram weighs half a word
HALF = N_BUCKETS // 2  # system prompt: [0, HALF); edges of the user text: [HALF, N_BUCKETS)
_COARSE_BUCKETS: dict[str, int] = {}


def task_features(f: RequestFeatures, rule: str | None = None) -> dict[int, float]:
    """Bucket -> value for one request (training's view of :func:`task_feature_pairs`, a repeated bucket's
    values summed)."""
    keys, values = task_feature_pairs(f, rule)
    out: dict[int, float] = {}
    for b, v in zip(keys.tolist(), values.tolist()):
        out[b] = out.get(b, 0.0) + v
    return out


def task_feature_pairs(f: RequestFeatures, rule: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The request's features as buckets and their values, a bucket possibly repeated (a linear model adds
    them up either way): counts of the word uni/bigrams of the system prompt and of the user text's head
    and tail (two namespaces; a short text is its own head and tail, so its words count twice), character
    trigrams, the rules' label (router/tasks.py, weighted RULE_VALUE) and a few coarse counts. Left
    unmerged because this runs on every proxied call: merging is dict work in Python, the sum is numpy's."""
    user = f.user_text
    sys_keys, sys_values = _system_pairs(f.system_text) if f.system_text else ((), None)
    keys: list[int] = list(sys_keys)
    lengths: list[int] = []
    weights: list[float] = []
    edges = user[:EDGE_CHARS] + " " + user[-EDGE_CHARS:]
    unis, pairs = ngram_buckets(words_of(edges)[: 2 * SYSTEM_WORDS], HALF)  # edges: lower case already
    keys.extend(unis)
    keys.extend(pairs)
    lengths.append(len(keys) - len(sys_keys))
    weights.append(1.0)
    if user:
        start = len(keys)
        keys.extend(char_gram_buckets(user[:CHAR_EDGE]))
        if len(user) > CHAR_EDGE:  # a short text is its own start and end: counted once
            keys.extend(char_gram_buckets(user[-CHAR_EDGE:]))
        lengths.append(len(keys) - start)
        weights.append(CHAR_VALUE)
    edge_end = len(keys)  # keys[len(sys_keys):edge_end] are the user text's, in [0, HALF) until moved
    rule = rule or classify_task(f)
    for name, value in (
        (f"rule={rule}", RULE_VALUE),
        (f"q={min(f.n_question_marks, 3)}", 1.0),
        (f"num={min(f.n_numbers, 5)}", 1.0),
        (f"sys={bool(f.system_text)}", 1.0),
        (f"turns={min(f.n_assistant_turns, 2)}", 1.0),
        (f"json={f.response_format or '-'}", 1.0),
    ):
        keys.append(_coarse(name))
        lengths.append(1)
        weights.append(value)
    buckets = np.array(keys, dtype=np.int64)
    buckets[len(sys_keys) : edge_end] += HALF  # the user text's namespace
    values = np.repeat(np.array(weights), lengths)
    return buckets, values if sys_values is None else np.concatenate((sys_values, values))


@lru_cache(maxsize=512)
def _system_pairs(system: str) -> tuple[tuple[int, ...], np.ndarray]:
    """An application sends the same system prompt with every call: hash it once."""
    out: dict[int, float] = dict(hashed_word_ngram_counts(_WORD.findall(system)[:SYSTEM_WORDS], HALF, SYSTEM_WORDS))
    for b in char_gram_buckets(system[:CHAR_SYSTEM].lower(), "s"):
        out[b] = out.get(b, 0.0) + CHAR_VALUE
    values = np.array(list(out.values()))
    values.flags.writeable = False  # shared by every call with this prompt
    return tuple(out), values


_V = TypeVar("_V")
_GRAM_MEMO: dict[str, int] = {}
_GRAM_MEMO_MAX = 1 << 17
_WORD_GRAMS: dict[str, tuple[int, ...]] = {}  # word -> the buckets of " word "'s trigrams
_WORD_GRAMS_MAX = 50_000


def char_gram_buckets(text: str, namespace: str = "") -> list[int]:
    """The buckets in [0, HALF) of the text's character trigrams, white space folded to one space and
    the text padded with one, so words' starts and ends are trigrams of their own. This runs on every
    proxied call, so the text's trigrams are gathered per word (a word's from a memo: the trigrams of
    " word ") plus the one across each gap between words (last letter, space, first letter); a text's
    buckets come out in another order than its trigrams, which a linear model does not see."""
    if namespace:
        t = " " + " ".join(text.split()) + " "
        return _gram_buckets([namespace + g for g in map("".join, zip(*(t[i:] for i in range(CHAR_N))))])
    words = text.split()
    per_word = _memoised(_WORD_GRAMS, _WORD_GRAMS_MAX, words, _word_grams)
    out = list(chain.from_iterable(per_word))
    if len(words) > 1:
        out += _gram_buckets(
            list(map("".join, zip(map(itemgetter(-1), words), repeat(" "), map(itemgetter(0), words[1:]))))
        )
    return out


def _word_grams(word: str) -> tuple[int, ...]:
    w = " " + word + " "
    return tuple(_gram_buckets(list(map("".join, zip(w, w[1:], w[2:])))))


def _gram_buckets(grams: list[str]) -> list[int]:
    return _memoised(_GRAM_MEMO, _GRAM_MEMO_MAX, grams, _gram_bucket)


def _gram_bucket(gram: str) -> int:
    return zlib.crc32(gram.encode("utf-8", "surrogatepass")) % HALF


def _memoised(memo: dict[str, _V], limit: int, keys: list[str], make: Callable[[str], _V]) -> list[_V]:
    """`[make(k) for k in keys]` from a bounded memo: a C-level map over a dict, `make` only on misses."""
    if len(memo) > limit:
        memo.clear()
    out = list(map(memo.get, keys))
    if None in out:
        for i, v in enumerate(out):
            if v is None:
                out[i] = memo[keys[i]] = make(keys[i])
    return out  # type: ignore[return-value]


def _coarse(name: str) -> int:
    b = _COARSE_BUCKETS.get(name)
    if b is None:
        b = _COARSE_BUCKETS[name] = zlib.crc32(name.encode()) % N_BUCKETS
    return b


@dataclass(frozen=True)
class TaskModel:
    version: str
    tasks: tuple[str, ...]
    intercepts: tuple[float, ...]
    weights: dict[int, tuple[tuple[int, float], ...]]  # bucket -> ((task index, weight), ...)
    report: dict[str, Any]

    def __post_init__(self) -> None:
        # the same weights as a dense bucket x task matrix and a table from every bucket to its row (1 MB;
        # an unweighted bucket points at the last row, all zeros): a request's few hundred features are
        # looked up and summed in three numpy operations, not one weight at a time in Python
        buckets = sorted(b for b in self.weights if 0 <= b < N_BUCKETS)  # no feature lands outside
        matrix = np.zeros((len(buckets) + 1, len(self.tasks)))
        for row, b in enumerate(buckets):
            for k, w in self.weights[b]:
                matrix[row, k] = w
        row_of = np.full(N_BUCKETS, len(buckets), dtype=np.int32)
        row_of[np.array(buckets, dtype=np.int64)] = np.arange(len(buckets), dtype=np.int32)
        object.__setattr__(self, "_row_of", row_of)
        object.__setattr__(self, "_matrix", matrix)
        object.__setattr__(self, "_intercepts", np.array(self.intercepts))

    def predict(self, f: RequestFeatures) -> str:
        rule = classify_task(f)
        if rule == "tool_use":  # declared tools decide on their own: the model never saw any
            return rule
        keys, values = task_feature_pairs(f, rule)
        scores = self._intercepts + values @ self._matrix[self._row_of[keys]]  # type: ignore[attr-defined]
        return self.tasks[int(scores.argmax())]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "tasks": list(self.tasks),
            "intercepts": list(self.intercepts),
            "weights": {str(b): [[k, w] for k, w in kw] for b, kw in self.weights.items()},
            "report": self.report,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TaskModel":
        tasks = tuple(str(t) for t in data["tasks"])
        weights = {int(b): tuple((int(k), float(w)) for k, w in kw) for b, kw in data["weights"].items()}
        if any(not 0 <= k < len(tasks) for kw in weights.values() for k, _ in kw):
            raise ValueError("task model: a weight names a task it does not list")
        return cls(
            str(data["version"]), tasks, tuple(float(x) for x in data["intercepts"]), weights, data.get("report", {})
        )


def task_of(f: RequestFeatures) -> str:
    """The request's task: the learned model's call when it ships, the rules' otherwise."""
    model = shipped_model()
    return model.predict(f) if model is not None else classify_task(f)


@cache
def shipped_model() -> TaskModel | None:
    try:
        return TaskModel.from_json(json.loads(MODEL_PATH.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fit_task_model(
    feats: Sequence[RequestFeatures],
    labels: Sequence[str],
    *,
    c: float = 3.0,
    keep: int = 40000,
    report: dict | None = None,
) -> TaskModel:
    """Multinomial logistic regression over `task_features`; the largest `keep` weights are kept."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    data, ind, ptr = [], [], [0]
    for f in feats:
        for b, v in sorted(task_features(f).items()):
            ind.append(b)
            data.append(v)
        ptr.append(len(ind))
    x = sparse.csr_matrix((data, ind, ptr), shape=(len(feats), N_BUCKETS))
    clf = LogisticRegression(C=c, max_iter=5000).fit(x, list(labels))
    coef = clf.coef_
    flat = np.abs(coef).ravel()
    cut = np.partition(flat, -keep)[-keep] if flat.size > keep else 0.0
    weights: dict[int, list[tuple[int, float]]] = {}
    rows, cols = np.nonzero((np.abs(coef) >= cut) & (coef != 0))
    for k, b in zip(rows.tolist(), cols.tolist()):
        w = float(f"{coef[k, b]:.4g}")
        if w and math.isfinite(w):
            weights.setdefault(b, []).append((k, w))
    return TaskModel(
        "tasks-v1",
        tuple(str(t) for t in clf.classes_),
        tuple(float(f"{x:.5g}") for x in clf.intercept_),
        {b: tuple(kw) for b, kw in weights.items()},
        report or {},
    )


TRAIN_SETS = (
    Path(__file__).parent / "data" / "task_train_api.jsonl",
    Path(__file__).parent / "data" / "task_train_api_more.jsonl",
    Path(__file__).parent / "data" / "task_train_api_third.jsonl",
)


def train_shipped(out: Path = MODEL_PATH, *, c: float = 1.0, keep: int = 80000) -> dict[str, Any]:
    """Train on the training sets plus the eval set's tuning half; report the held-out half (never trained on)."""
    from .task_eval import EVAL_SET, half_of

    def load(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    evals = load(EVAL_SET)
    train = {path.name: load(path) for path in TRAIN_SETS}
    rows = [r for rs in train.values() for r in rs] + [r for r in evals if half_of(r["id"]) == "tuning"]
    held = [r for r in evals if half_of(r["id"]) == "held-out"]
    from .features import extract_features

    model = fit_task_model([extract_features(r["body"]) for r in rows], [r["task"] for r in rows], c=c, keep=keep)
    correct = sum(model.predict(extract_features(r["body"])) == r["task"] for r in held)
    report = {
        "trained_on": {
            **{name: len(rs) for name, rs in train.items()},
            "task_eval_api.jsonl tuning half": len(evals) - len(held),
        },
        "held_out": {"rows": len(held), "accuracy": round(correct / len(held), 4)},
        "params": {
            "C": c,
            "keep_weights": keep,
            "n_buckets": N_BUCKETS,
            "rule_value": RULE_VALUE,
            "char_n": CHAR_N,
            "char_system": CHAR_SYSTEM,
            "char_edge": CHAR_EDGE,
        },
    }
    model = TaskModel(model.version, model.tasks, model.intercepts, model.weights, report)
    out.write_text(json.dumps(model.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")
    return report
