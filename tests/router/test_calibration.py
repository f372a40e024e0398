"""Score → pass rate per group: groups with evidence get their own mapping, the rest the global one."""

from __future__ import annotations

import random

import pytest

from turnout.router.calibration import PassCalibration, calibration_error, fit_pass_calibration, group_keys


def synthetic(n: int, seed: int = 0):
    """Two templates at the same scores: `labels` passes 95 % of the time, `essay` 30 %."""
    rng = random.Random(seed)
    scores, passes, keys = [], [], []
    for i in range(n):
        template = "labels" if i % 2 else "essay"
        s = rng.uniform(0.5, 0.95)
        rate = 0.95 if template == "labels" else 0.30
        scores.append(s)
        passes.append(rng.random() < rate)
        keys.append(group_keys("qa", None, template))
    return scores, passes, keys


def test_group_keys_skip_what_is_unknown():
    assert group_keys("qa", "billing", "fp1") == ("task:qa", "feature:billing", "template:fp1")
    assert group_keys("qa") == ("task:qa",)
    assert group_keys(None, None, None) == ()


def test_each_template_gets_its_measured_pass_rate():
    scores, passes, keys = synthetic(600)
    cal = fit_pass_calibration(scores, passes, keys)
    assert {"template:labels", "template:essay", "task:qa"} <= set(cal.groups)
    labels = cal.probability(0.7, group_keys("qa", None, "labels"))
    essay = cal.probability(0.7, group_keys("qa", None, "essay"))
    assert labels == pytest.approx(0.95, abs=0.06) and essay == pytest.approx(0.30, abs=0.08)
    # a template never seen gets the global mapping: between the two
    unseen = cal.probability(0.7, group_keys("qa", None, "new-template"))
    assert essay < unseen < labels
    # calibrated per template, the error on fresh rows from the same rule is small; the raw score's is not
    s2, p2, k2 = synthetic(600, seed=1)
    calibrated = calibration_error([cal.probability(s, k) for s, k in zip(s2, k2)], p2)
    assert calibrated < 0.05 < calibration_error(s2, p2)


def test_small_groups_keep_the_global_mapping():
    scores, passes, keys = synthetic(600)
    keys = [k + (("feature:rare",) if i < 5 else ()) for i, k in enumerate(keys)]
    cal = fit_pass_calibration(scores, passes, keys, min_rows=20)
    assert "feature:rare" not in cal.groups
    assert cal.evidence(("feature:rare", "template:labels")) == [("template:labels", 300)]


def test_one_class_is_its_smoothed_rate_and_the_artifact_round_trips():
    cal = fit_pass_calibration([0.2, 0.9, 0.5], [True, True, True], [("task:qa",)] * 3)
    assert cal.probability(0.01) == pytest.approx(4 / 5, abs=1e-4) == cal.probability(0.99)
    scores, passes, keys = synthetic(200)
    fitted = fit_pass_calibration(scores, passes, keys)
    again = PassCalibration.from_json(fitted.to_json())
    assert again == fitted
    with pytest.raises(ValueError):
        fit_pass_calibration([], [], [])
