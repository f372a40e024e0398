"""Training the difficulty model and writing its JSON artifact.

Data: JSON lines, each an OpenAI request body (or just ``{"messages": ...}``)
plus ``strong_correct`` and ``weak_correct`` (and optionally ``id`` and
``source``). The label is "the weak model is as good as the strong one"
(``weak_correct >= strong_correct``).

Split: within each ``source``, rows are ranked by crc32 of ``"<seed>:<id>"``
and every fifth goes to validation — deterministic, stratified, and
independent of file order. :func:`split_rows` is the single definition of the
split; ``scripts/apgr`` uses it to re-score the same validation rows.

Model: L2 logistic regression (lbfgs) over hashed word n-grams + standardised
dense features; weights smaller than the top ``keep_weights`` in magnitude are
dropped to keep the artifact small. The hyper-parameters are the ones that won
4-fold cross-validation on the training split of the shipped data (see
``MODEL_SELECTION``): C in {0.3, 1, 3}, 2^14 vs 2^18 buckets, binary vs count
values, with/without dense features, with/without the multiple-choice/open
namespaces, and pruning to 5k/10k/20k weights. Validation numbers move by
±0.02 (MMLU) and ±0.05 (GSM8K, 129 rows) between different random splits, so
differences smaller than that are noise.

Only this module imports numpy/scikit-learn; inference (``difficulty.py``)
does not.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .apgr import apgr, pgr_curve
from .difficulty import DENSE_FEATURES, DifficultyModel, dense_vector, sparse_vector
from .features import RequestFeatures, extract_features
from .tokens import encoding_name

MODEL_VERSION = "difficulty-v1"
N_BUCKETS = 2**18
MAX_WORDS = 200
C = 3.0
KEEP_WEIGHTS = 12000
VAL_EVERY = 5

# Cross-validated APGR (4 folds on the training split) that chose the settings above.
MODEL_SELECTION = [
    {"model": "dense features only", "cv_apgr": {"mmlu": 0.566, "gsm8k": 0.554, "overall": 0.576}},
    {"model": "2^14 buckets binary + dense, C=1", "cv_apgr": {"mmlu": 0.617, "gsm8k": 0.554, "overall": 0.619}},
    {"model": "2^18 buckets binary + dense, C=3", "cv_apgr": {"mmlu": 0.624, "gsm8k": 0.564, "overall": 0.625}},
    {"model": "2^18 buckets counts + dense, C=1", "cv_apgr": {"mmlu": 0.618, "gsm8k": 0.545, "overall": 0.620}},
    {"model": "2^18 buckets binary, no dense, C=1", "cv_apgr": {"mmlu": 0.619, "gsm8k": 0.490, "overall": 0.620}},
    {
        "model": "2^18 buckets binary, mc/open namespaces + dense, C=3 (chosen)",
        "cv_apgr": {"mmlu": 0.624, "gsm8k": 0.574, "overall": 0.627},
    },
    {
        "note": "then, on the validation split: pruning 121k -> 25k -> 12k weights cost ~0.003 APGR each step; "
        "max_words 400 -> 200 (halves scoring time) changed overall validation APGR 0.655 -> 0.660",
    },
]


@dataclass(frozen=True)
class TrainRow:
    id: str
    source: str
    body: dict[str, Any]
    strong_correct: float
    weak_correct: float
    groups: tuple[str, ...] = ()  # calibration groups (router.calibration.group_keys); ledger rows only


@dataclass(frozen=True)
class TrainReport:
    version: str
    n_train: int
    n_val: int
    apgr_val: dict[str, float]  # per source family + "overall"
    apgr_train: dict[str, float]
    n_weights: int
    artifact: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_family(source: str) -> str:
    """``mmlu:anatomy`` -> ``mmlu``: APGR is reported per benchmark, not per subject."""
    return source.split(":", 1)[0] if source else "all"


def read_rows(paths: Iterable[Path | str]) -> list[TrainRow]:
    rows: list[TrainRow] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    sc, wc = rec["strong_correct"], rec["weak_correct"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(
                        f"{path}:{lineno}: need a JSON object with strong_correct and weak_correct ({exc})"
                    ) from None
                body = {
                    k: v
                    for k, v in rec.items()
                    if k not in ("strong_correct", "weak_correct", "strong_model", "weak_model", "id", "source")
                }
                rid = rec.get("id")
                if not isinstance(rid, str):
                    rid = format(zlib.crc32(json.dumps(body, sort_keys=True).encode()), "08x")
                src = rec.get("source")
                rows.append(
                    TrainRow(rid, src if isinstance(src, str) else "all", body, float(bool(sc)), float(bool(wc)))
                )
    return rows


def split_rows(rows: Sequence[TrainRow], seed: int = 0) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): every 5th row by id hash within each source."""
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_source.setdefault(r.source, []).append(i)
    train, val = [], []
    for idx in by_source.values():
        idx.sort(key=lambda i: (zlib.crc32(f"{seed}:{rows[i].id}".encode()), rows[i].id))
        for j, i in enumerate(idx):
            (val if j % VAL_EVERY == 0 else train).append(i)
    return sorted(train), sorted(val)


def features_for(row: TrainRow) -> RequestFeatures:
    return extract_features(row.body)


def apgr_by_source(scores: Sequence[float], rows: Sequence[TrainRow]) -> dict[str, float]:
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(source_family(r.source), []).append(i)
    out: dict[str, float] = {}
    for fam, idx in sorted(groups.items()):
        out[fam] = round(
            apgr([scores[i] for i in idx], [rows[i].strong_correct for i in idx], [rows[i].weak_correct for i in idx]),
            4,
        )
    out["overall"] = round(apgr(list(scores), [r.strong_correct for r in rows], [r.weak_correct for r in rows]), 4)
    return out


def calibration_table(scores: Sequence[float], rows: Sequence[TrainRow], n_points: int = 101) -> list[dict[str, float]]:
    """Threshold -> share routed to the cheaper model and quality kept, on validation rows.

    Row ``i`` routes the ``route_fraction`` highest-scoring requests (score >=
    ``threshold``); ``quality_ratio`` is the resulting accuracy divided by the
    all-strong accuracy. The policy resolves ``target_quality`` against it.
    """
    strong = [r.strong_correct for r in rows]
    weak = [r.weak_correct for r in rows]
    curve = pgr_curve(scores, strong, weak, n_points)
    desc = sorted(scores, reverse=True)
    n = len(desc)
    table = []
    for c, q, p in zip(curve.fractions, curve.quality, curve.pgr):
        k_weak = n - int(c * n + 0.5)  # requests left to the cheaper model
        if k_weak == 0:
            threshold = 1.0 + 1e-9  # route nothing
        elif k_weak == n:
            threshold = 0.0
        else:
            threshold = (desc[k_weak - 1] + desc[k_weak]) / 2
        table.append(
            {
                "threshold": round(threshold, 6),
                "route_fraction": round(k_weak / n, 4),
                "quality_ratio": round(q / curve.q_strong, 4) if curve.q_strong else 0.0,
                "pgr": round(p, 4),
            }
        )
    table.sort(key=lambda r: r["threshold"], reverse=True)
    return table


def _round(x: float) -> float:
    return float(f"{x:.5g}")


def fit(
    rows: Sequence[TrainRow],
    train_idx: Sequence[int],
    seed: int = 0,
    sample_weight: Sequence[float] | None = None,
    feats: Sequence[RequestFeatures] | None = None,
) -> DifficultyModel:
    """The model fit on `rows[train_idx]` (optionally weighted), pruned and rounded as it ships; no report yet."""
    import numpy as np
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    feats = list(feats) if feats is not None else [features_for(r) for r in rows]
    y = np.array([1 if r.weak_correct >= r.strong_correct else 0 for r in rows])
    if len(set(y[list(train_idx)].tolist())) < 2:
        raise ValueError(
            "training split has a single label; need rows where the weak model loses and where it does not"
        )
    dense = np.array([dense_vector(f) for f in feats], dtype=float)
    data, ind, ptr = [], [], [0]
    for f in feats:
        for b, v in sparse_vector(f, N_BUCKETS, MAX_WORDS).items():
            ind.append(b)
            data.append(v)
        ptr.append(len(ind))
    x_hash = sparse.csr_matrix((data, ind, ptr), shape=(len(rows), N_BUCKETS))
    scaler = StandardScaler().fit(dense[list(train_idx)])
    x = sparse.hstack([x_hash, sparse.csr_matrix(scaler.transform(dense))]).tocsr()

    clf = LogisticRegression(C=C, max_iter=3000, random_state=seed)
    clf.fit(
        x[list(train_idx)],
        y[list(train_idx)],
        sample_weight=None if sample_weight is None else np.asarray(sample_weight),
    )
    coef = clf.coef_[0]
    hash_coef = coef[:N_BUCKETS]
    dense_coef = coef[N_BUCKETS:] / scaler.scale_
    intercept = float(clf.intercept_[0] - float(np.dot(dense_coef, scaler.mean_)))

    nz = np.flatnonzero(hash_coef)
    if len(nz) > KEEP_WEIGHTS:
        nz = nz[np.argsort(-np.abs(hash_coef[nz]), kind="stable")[:KEEP_WEIGHTS]]
    hash_weights = {
        int(b): _round(float(hash_coef[b])) for b in sorted(nz.tolist()) if _round(float(hash_coef[b])) != 0.0
    }
    return DifficultyModel(
        version=MODEL_VERSION,
        intercept=_round(intercept),
        dense_names=DENSE_FEATURES,
        dense_weights=tuple(_round(float(w)) for w in dense_coef),
        hash_weights=hash_weights,
        n_buckets=N_BUCKETS,
        max_words=MAX_WORDS,
        report={},
        calibration=(),
    )


def train(data_paths: list[Path], out: Path, seed: int = 0) -> TrainReport:
    """Fit on the training split, validate, write the JSON artifact to ``out``."""
    rows = read_rows(data_paths)
    if len(rows) < 10:
        raise ValueError(f"need at least 10 rows to train, got {len(rows)}")
    train_idx, val_idx = split_rows(rows, seed)
    feats = [features_for(r) for r in rows]
    model = fit(rows, train_idx, seed, feats=feats)
    hash_weights = model.hash_weights
    # score with the exported (pruned, rounded) model so the report describes what ships
    scores = [model.score(f) for f in feats]
    val_rows = [rows[i] for i in val_idx]
    val_scores = [scores[i] for i in val_idx]
    train_rows = [rows[i] for i in train_idx]
    apgr_val = apgr_by_source(val_scores, val_rows)
    apgr_train = apgr_by_source([scores[i] for i in train_idx], train_rows)
    params = {"C": C, "n_buckets": N_BUCKETS, "max_words": MAX_WORDS, "keep_weights": KEEP_WEIGHTS, "seed": seed}
    report = {
        "data": [Path(p).name for p in data_paths],
        "n_rows": len(rows),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "split": {"method": "per source, rank by crc32(f'{seed}:{id}'), every 5th row -> validation", "seed": seed},
        "label": "weak_correct >= strong_correct",
        "token_encoding": encoding_name(),
        "params": params,
        "apgr_val": apgr_val,
        "apgr_train": apgr_train,
        "val_accuracy": {
            fam: {
                "strong": round(sum(r.strong_correct for r in rs) / len(rs), 4),
                "weak": round(sum(r.weak_correct for r in rs) / len(rs), 4),
            }
            for fam, rs in _group(val_rows).items()
        },
        "model_selection": MODEL_SELECTION,
    }
    model = dataclasses.replace(model, report=report, calibration=tuple(calibration_table(val_scores, val_rows)))
    model.save(out)
    return TrainReport(
        version=MODEL_VERSION,
        n_train=len(train_idx),
        n_val=len(val_idx),
        apgr_val=apgr_val,
        apgr_train=apgr_train,
        n_weights=len(hash_weights),
        artifact=str(out),
        params=params,
    )


def _group(rows: Sequence[TrainRow]) -> dict[str, list[TrainRow]]:
    out: dict[str, list[TrainRow]] = {}
    for r in rows:
        out.setdefault(source_family(r.source), []).append(r)
    return dict(sorted(out.items()))


def validation_apgr(model: DifficultyModel, data_paths: list[Path], seed: int | None = None) -> dict[str, float]:
    """Re-score the validation split of ``data_paths`` with ``model`` (used by scripts/apgr)."""
    if seed is None:
        seed = int(model.report.get("split", {}).get("seed", 0))
    rows = read_rows(data_paths)
    _, val_idx = split_rows(rows, seed)
    val_rows = [rows[i] for i in val_idx]
    return apgr_by_source([model.score(features_for(r)) for r in val_rows], val_rows)


__all__ = ["TrainReport", "train", "read_rows", "split_rows", "calibration_table", "validation_apgr"]


def cross_validated_apgr(rows: Sequence[TrainRow], folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """APGR on every row held out once: `folds` fits, each scoring the fold it did not see (per source,
    by id hash). Returns the out-of-fold APGR per family and overall, and each fold's, for the spread."""
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_source.setdefault(r.source, []).append(i)
    fold_of = [0] * len(rows)
    for idx in by_source.values():
        idx.sort(key=lambda i: (zlib.crc32(f"{seed}:{rows[i].id}".encode()), rows[i].id))
        for j, i in enumerate(idx):
            fold_of[i] = j % folds
    feats = [features_for(r) for r in rows]
    scores = [0.0] * len(rows)
    per_fold = []
    for k in range(folds):
        train_idx = [i for i in range(len(rows)) if fold_of[i] != k]
        held = [i for i in range(len(rows)) if fold_of[i] == k]
        model = fit(rows, train_idx, seed, feats=feats)
        for i in held:
            scores[i] = model.score(feats[i])
        per_fold.append(apgr_by_source([scores[i] for i in held], [rows[i] for i in held]))
    return {"out_of_fold": apgr_by_source(scores, rows), "folds": per_fold}
