"""A deployment's own router, trained on its shadow verdicts (`turnout train --from-ledger`).

Every decided observe-mode verdict in the ledger is a labelled row: the request the team sent, and
whether the cheaper model's answer was as good as the requested model's (pass) or not (fail). The
rows are split per task by id hash into train (3/5), validation (1/5) and test (1/5). The difficulty
model is refit on the shipped data's training split plus the ledger's training rows, the ledger rows
weighted by a factor chosen on the validation rows (never on rows it trained on); the score's
calibration — the score mapped to the measured pass rate per task, feature and prompt template
(router/calibration.py), which `target_quality` is then held to — comes from the validation rows too.
The test rows judge the result against the shipped model: APGR (how well the score orders what the
cheaper model gets right) and the calibration error of each model's pass probability, overall and
per task. A model that is not better on APGR is not written.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .apgr import apgr
from .calibration import calibration_error, fit_pass_calibration, group_keys
from .difficulty import DifficultyModel, load_model
from .features import RequestFeatures
from .train import TrainRow, calibration_table, features_for, fit, read_rows, split_rows

DEFAULT_DATA = Path(__file__).parent / "data" / "routellm_train.jsonl"
WEIGHTS = (1.0, 3.0, 10.0, 30.0, 100.0)
MIN_ROWS = 50  # decided verdicts: fewer cannot be split three ways into anything that says much
MIN_HELD_OUT = 10

# The labelled rows: decided observe-mode verdicts with the request that was shadowed.
ROWS_SQL = """
select se.flow_id, coalesce(f.task, '?'), f.request_body, se.verdict, f.feature, f.template_fp
from shadow_evals se join flows f on f.id = se.flow_id
where se.mode = 'observe' and se.verdict in ('pass', 'fail') and f.request_body is not null and se.started_at >= ?
order by se.id
"""


@dataclass(frozen=True)
class LedgerTrainReport:
    n_rows: int
    n_train: int
    n_val: int
    n_test: int
    weight: float  # of a ledger row against a shipped one, chosen on validation
    val_apgr: dict[float, float]  # per candidate weight
    test_apgr_new: float
    test_apgr_shipped: float
    test_ece_new: float
    test_ece_shipped: float
    written: bool
    reason: str
    artifact: str | None
    # per task on the test rows: rows, measured pass rate, mean pass probability new / shipped
    test_by_task: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["val_apgr"] = {str(k): v for k, v in self.val_apgr.items()}
        return d


def rows_from_ledger(conn: Any, since: str = "") -> list[TrainRow]:
    """Labelled rows from a ledger connection: strong (the requested model) correct, weak = the verdict."""
    out = []
    for flow_id, task, body_text, verdict, feature, template in conn.execute(ROWS_SQL, [since or ""]):
        try:
            body = json.loads(body_text)
        except (TypeError, ValueError):
            continue
        if isinstance(body, dict):
            passed = 1.0 if verdict == "pass" else 0.0
            out.append(TrainRow(str(flow_id), f"ledger:{task}", body, 1.0, passed, group_keys(task, feature, template)))
    return out


def split_three(rows: Sequence[TrainRow], seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """(train, validation, test) indices: per source, by crc32 rank — every 5th to test, the next to validation."""
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_source.setdefault(r.source, []).append(i)
    train, val, test = [], [], []
    for idx in by_source.values():
        idx.sort(key=lambda i: (zlib.crc32(f"{seed}:{rows[i].id}".encode()), rows[i].id))
        for j, i in enumerate(idx):
            (test if j % 5 == 0 else val if j % 5 == 1 else train).append(i)
    return sorted(train), sorted(val), sorted(test)


def pass_probabilities(
    model: DifficultyModel, rows: Sequence[TrainRow], feats: Sequence[RequestFeatures] | None = None
) -> list[float]:
    """The model's probability that the cheaper model passes each row: what the router orders requests
    by, calibrated to the row's groups where the model is. `feats`: the rows' features, if already known."""
    scores = [model.score(f) for f in (feats if feats is not None else [features_for(r) for r in rows])]
    cal = model.pass_calibration
    return [cal.probability(s, r.groups) for s, r in zip(scores, rows)] if cal else scores


def _apgr(probabilities: Sequence[float], rows: Sequence[TrainRow]) -> float:
    return round(apgr(probabilities, [r.strong_correct for r in rows], [r.weak_correct for r in rows]), 4)


def score_apgr(model: DifficultyModel, rows: Sequence[TrainRow]) -> float:
    """APGR of what the router orders requests by: the pass probability, calibrated per group where it is."""
    return _apgr(pass_probabilities(model, rows), rows)


def _ece(probabilities: Sequence[float], rows: Sequence[TrainRow]) -> float:
    return calibration_error(probabilities, [r.weak_correct >= 1 for r in rows])


def by_task(rows: Sequence[TrainRow], new: Sequence[float], old: Sequence[float]) -> tuple[dict[str, Any], ...]:
    """Measured pass rate per task next to each model's mean pass probability (`new`, `old`: per row)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.source.removeprefix("ledger:"), []).append(i)
    out = []
    for task, idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        n = len(idx)
        out.append({
            "task": task, "rows": n, "pass_rate": round(sum(rows[i].weak_correct for i in idx) / n, 4),
            "new": round(sum(new[i] for i in idx) / n, 4), "shipped": round(sum(old[i] for i in idx) / n, 4),
        })  # fmt: skip
    return tuple(out)


def train_from_ledger(
    ledger_rows: Sequence[TrainRow],
    out: Path,
    *,
    shipped_data: Sequence[Path] = (DEFAULT_DATA,),
    shipped: DifficultyModel | None = None,
    seed: int = 0,
    weights: Sequence[float] = WEIGHTS,
) -> LedgerTrainReport:
    """Refit, choose the ledger rows' weight on validation, judge on test; write `out` only when better."""
    ledger_rows = list(ledger_rows)
    if len(ledger_rows) < MIN_ROWS:
        raise ValueError(
            f"{len(ledger_rows)} decided shadow verdicts with their request in the ledger; need at least {MIN_ROWS} "
            "(shadow evaluations on, turnout_store_bodies true)"
        )
    shipped = shipped or load_model(None)
    base = read_rows(shipped_data)
    base_train, _ = split_rows(base, seed)
    tr, va, te = split_three(ledger_rows, seed)
    val_rows, test_rows = [ledger_rows[i] for i in va], [ledger_rows[i] for i in te]
    if len(test_rows) < MIN_HELD_OUT or len(val_rows) < MIN_HELD_OUT:
        raise ValueError(f"too few held-out rows ({len(val_rows)} validation, {len(test_rows)} test)")
    rows = [base[i] for i in base_train] + [ledger_rows[i] for i in tr]
    feats = [features_for(r) for r in rows]
    train_idx = list(range(len(rows)))
    n_base = len(base_train)
    candidates: dict[float, DifficultyModel] = {}
    val_apgr: dict[float, float] = {}
    val_feats, test_feats = [features_for(r) for r in val_rows], [features_for(r) for r in test_rows]
    for w in weights:
        model = fit(rows, train_idx, seed, sample_weight=[1.0] * n_base + [w] * (len(rows) - n_base), feats=feats)
        candidates[w], val_apgr[w] = model, _apgr(pass_probabilities(model, val_rows, val_feats), val_rows)
    best = max(weights, key=lambda w: (val_apgr[w], -w))
    model = candidates[best]
    val_scores = [model.score(f) for f in val_feats]
    calibration = fit_pass_calibration(
        val_scores, [r.weak_correct >= 1 for r in val_rows], [r.groups for r in val_rows]
    )
    report_data = {
        "from_ledger": {
            "rows": len(ledger_rows), "train": len(tr), "validation": len(va), "test": len(te), "weight": best,
            "val_apgr": {str(k): v for k, v in val_apgr.items()}, "seed": seed,
            "split": "per task, rank by crc32(f'{seed}:{flow_id}'): every 5th to test, the next to validation",
        },
        "shipped_data_rows": n_base,
    }  # fmt: skip
    model = dataclasses.replace(
        model,
        version=f"{shipped.version}+ledger",
        report=report_data,
        calibration=tuple(calibration_table(val_scores, val_rows)),
        pass_calibration=calibration,
    )
    p_new, p_old = pass_probabilities(model, test_rows, test_feats), pass_probabilities(shipped, test_rows, test_feats)
    new_apgr, old_apgr = _apgr(p_new, test_rows), _apgr(p_old, test_rows)
    new_ece, old_ece = _ece(p_new, test_rows), _ece(p_old, test_rows)
    better = new_apgr > old_apgr
    reason = (
        f"held-out APGR {new_apgr:.3f} vs the shipped model's {old_apgr:.3f}"
        if better
        else f"not written: on the held-out rows its APGR {new_apgr:.3f} is not above the shipped model's "
        f"{old_apgr:.3f}; the shipped model stays the better router for this traffic"
    )
    if better:
        report_data["from_ledger"].update(test_apgr=new_apgr, test_apgr_shipped=old_apgr, test_ece=new_ece)
        model.save(out)
    return LedgerTrainReport(
        len(ledger_rows), len(tr), len(va), len(te), best, val_apgr, new_apgr, old_apgr, new_ece, old_ece,
        better, reason, str(out) if better else None, by_task(test_rows, p_new, p_old),
    )  # fmt: skip
