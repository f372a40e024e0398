"""Difficulty score: P(the cheaper model answers as well as the requested one).

The model is a logistic regression over (a) a handful of dense request
features and (b) hashed word unigrams/bigrams of the last user message. It
ships as plain JSON (``model/difficulty-v1.json``): weights, the feature spec
needed to reproduce the vector, and the training/validation report. Nothing is
pickled, so the artifact is reviewable and safe to load.

Inference is a sparse dot product in pure Python (no numpy, no sklearn): for a
single request that is far cheaper than ``predict_proba``'s per-call overhead.
Standardisation of the dense features is folded into their weights at export
time, so inference needs no scaler.

The dense features carry the signals that are cheap to read off a prompt and
that the training data showed to matter: length (longer MMLU questions are
harder for the weak model), numbers and sentences (steps in a GSM8K word
problem), and whether the prompt is multiple choice (a text-derived stand-in
for the benchmark source, which the proxy never sees).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any, Mapping

from .calibration import PassCalibration
from .features import RequestFeatures, hashed_word_ngram_set

ARTIFACT_FORMAT = "turnout-difficulty"
DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "model" / "difficulty-v1.json"

DENSE_FEATURES: tuple[str, ...] = (
    "log_user_tokens",
    "log_words",
    "log_numbers",
    "log_math_symbols",
    "has_latex",
    "log_question_words",
    "log_question_marks",
    "is_multiple_choice",
    "log_sentences",
    "log_code_lines",
    "has_code_block",
    "has_system",
    "log_depth",
    "has_tools",
    "is_english",
    "mc_x_log_user_tokens",
    "open_x_log_numbers",
    "open_x_log_sentences",
    "open_x_log_user_tokens",
)


def dense_vector(f: RequestFeatures) -> list[float]:
    """Dense features in :data:`DENSE_FEATURES` order."""
    mc = 1.0 if _is_multiple_choice(f) else 0.0
    open_ = 1.0 - mc
    lt = math.log1p(f.user_tokens)
    ln = math.log1p(f.n_numbers)
    ls = math.log1p(f.n_sentences)
    return [
        lt,
        math.log1p(f.n_words),
        ln,
        math.log1p(f.n_math_symbols),
        1.0 if f.has_latex else 0.0,
        math.log1p(f.n_question_words),
        math.log1p(f.n_question_marks),
        mc,
        ls,
        math.log1p(f.n_code_lines),
        1.0 if f.n_code_blocks else 0.0,
        1.0 if f.has_system else 0.0,
        math.log1p(f.conversation_depth),
        1.0 if f.has_tools else 0.0,
        1.0 if f.language == "en" else 0.0,
        mc * lt,
        open_ * ln,
        open_ * ls,
        open_ * lt,
    ]


def sparse_vector(f: RequestFeatures, n_buckets: int, max_words: int) -> dict[int, float]:
    """Hashed word n-grams, binary and L2-normalised.

    The hashing space is split in two namespaces: multiple-choice prompts use
    the lower half and open-ended prompts the upper half, so the same words
    may carry different weights in the two formats (in cross-validation this
    lifted GSM8K APGR by ~0.01-0.02 at no cost on MMLU).
    """
    half = n_buckets // 2
    grams = hashed_word_ngram_set(f.words, half, max_words)
    if not grams:
        return {}
    offset = 0 if _is_multiple_choice(f) else half
    norm = 1.0 / math.sqrt(len(grams))
    return {b + offset: norm for b in grams}


def _is_multiple_choice(f: RequestFeatures) -> bool:
    return f.n_choices >= 3


@dataclass(frozen=True)
class DifficultyModel:
    version: str
    intercept: float
    dense_names: tuple[str, ...]
    dense_weights: tuple[float, ...]
    hash_weights: Mapping[int, float]
    n_buckets: int
    max_words: int
    report: Mapping[str, Any]
    calibration: tuple[Mapping[str, float], ...]
    # score -> this deployment's measured pass rate per task/feature/template (`turnout train --from-ledger`)
    pass_calibration: PassCalibration | None = None

    def __post_init__(self) -> None:
        # Per-namespace weight tables keyed by the in-namespace bucket, so
        # scoring needs no offset arithmetic.
        half = self.n_buckets // 2
        mc = {b: w for b, w in self.hash_weights.items() if b < half}
        open_ = {b - half: w for b, w in self.hash_weights.items() if b >= half}
        object.__setattr__(self, "_ns_weights", (mc, open_))

    def score(self, f: RequestFeatures) -> float:
        """Probability in (0, 1) that the cheaper model does as well."""
        z = self.intercept
        for w, x in zip(self.dense_weights, dense_vector(f)):
            z += w * x
        grams = hashed_word_ngram_set(f.words, self.n_buckets // 2, self.max_words)
        if grams:
            mc, open_ = self._ns_weights  # type: ignore[attr-defined]
            table = mc if _is_multiple_choice(f) else open_
            z += sum(map(table.get, grams, repeat(0.0))) / math.sqrt(len(grams))
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    # ---------------------------------------------------------------- serialisation

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ARTIFACT_FORMAT,
            "version": self.version,
            "label": "weak_correct >= strong_correct",
            "feature_spec": {
                "dense": list(self.dense_names),
                "hashed": {
                    "kind": "word-unigram+bigram-crc32",
                    "n_buckets": self.n_buckets,
                    "max_words": self.max_words,
                    "value": "binary-l2",
                    "namespaces": "multiple-choice: [0, n/2), open: [n/2, n)",
                },
                "dense_standardisation": "folded into weights",
            },
            "intercept": self.intercept,
            "dense_weights": list(self.dense_weights),
            # bucket -> weight; sorted for stable diffs
            "hash_weights": {str(b): w for b, w in sorted(self.hash_weights.items())},
            "calibration": list(self.calibration),
            **({"pass_calibration": self.pass_calibration.to_json()} if self.pass_calibration else {}),
            "report": dict(self.report),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DifficultyModel":
        if not isinstance(data, Mapping) or data.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"not a {ARTIFACT_FORMAT} artifact")
        spec = data["feature_spec"]
        dense = tuple(spec["dense"])
        if dense != DENSE_FEATURES:
            raise ValueError(f"artifact dense features {dense} do not match this code's {DENSE_FEATURES}")
        hashed = spec["hashed"]
        if hashed.get("kind") != "word-unigram+bigram-crc32" or hashed.get("value") != "binary-l2":
            raise ValueError(f"unsupported hashed feature kind {hashed.get('kind')!r}")
        weights = tuple(float(w) for w in data["dense_weights"])
        if len(weights) != len(dense):
            raise ValueError("dense_weights length does not match feature spec")
        return cls(
            version=str(data["version"]),
            intercept=float(data["intercept"]),
            dense_names=dense,
            dense_weights=weights,
            hash_weights={int(b): float(w) for b, w in data["hash_weights"].items()},
            n_buckets=int(hashed["n_buckets"]),
            max_words=int(hashed["max_words"]),
            report=data.get("report", {}),
            calibration=tuple(data.get("calibration", ())),
            pass_calibration=PassCalibration.from_json(data["pass_calibration"])
            if "pass_calibration" in data
            else None,
        )

    @classmethod
    def load(cls, path: str | Path) -> "DifficultyModel":
        with open(path, encoding="utf-8") as fh:
            return cls.from_json(json.load(fh))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_json(), fh, separators=(",", ":"), sort_keys=False)
            fh.write("\n")


@lru_cache(maxsize=8)
def load_model(path: str | None = None) -> DifficultyModel:
    """Load (once per path) the shipped artifact or the one at ``path``."""
    return DifficultyModel.load(path or DEFAULT_ARTIFACT)
