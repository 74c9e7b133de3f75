"""Calibration on hand-computed cases: ECE, the abstention threshold, and cross-validated figures."""

import numpy as np
import pytest

from imprint.evaluate.calibration import (
    Calibration,
    _threshold,
    calibration_path,
    expected_calibration_error,
    fit_calibration,
    load_calibration,
)


def test_ece_by_hand():
    # bin [0.9,1.0): conf 0.9, 0.9 with 1 right -> |0.5-0.9| * 2/4; bin [0.2,0.3): conf 0.2, 0.2, both wrong -> 0.2*2/4
    assert expected_calibration_error([0.9, 0.9, 0.2, 0.2], [1, 0, 0, 0]) == pytest.approx(0.4 * 0.5 + 0.2 * 0.5)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)  # 1.0 falls in the last bin
    assert expected_calibration_error([], []) == 0.0


def test_threshold_abstains_on_at_most_the_allowed_share():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.2, 0.1])
    answerable = np.array([1] * 10 + [0, 0])
    t = _threshold(p, answerable, 0.1)
    assert (p[answerable == 1] < t).sum() == 1  # 10% of 10 answerable
    assert t == pytest.approx(0.1)
    assert (p[answerable == 1] < _threshold(p, answerable, 0.0)).sum() == 0


def test_fit_separates_answerable_and_reports_cross_validated_figures(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        answerable = i % 4 != 0
        relevance = rng.uniform(0.55, 0.9) if answerable else rng.uniform(0.1, 0.4)
        logprob = float(np.log(rng.uniform(0.2, 0.95)))
        rows.append(
            {"features": [logprob, relevance, 1.0], "correct": answerable and logprob > -0.5, "answerable": answerable}
        )
    cal = fit_calibration("rag", rows)
    r = cal.report
    assert r["n"] == 60 and r["n_unanswerable"] == 15 and r["calibrated"]
    assert r["abstain_unanswerable_cv"] >= 0.9 and r["abstain_answerable_cv"] <= 0.15
    assert 0 <= r["ece_cv"] <= 1
    assert cal.should_abstain([-0.3, 0.2, 1.0]) and not cal.should_abstain([-0.3, 0.8, 1.0])
    # confidence follows the token probability it was fitted on
    assert cal.confidence_of([-0.1, 0.8, 1.0]) > cal.confidence_of([-1.5, 0.8, 1.0])

    cal.save(calibration_path(tmp_path, "rag"))
    loaded = load_calibration(tmp_path, "rag", "rag")
    assert loaded.threshold == cal.threshold and loaded.report == cal.report
    assert load_calibration(tmp_path, "module+rag:m@1", "module+rag").report == {"calibrated": False}


def test_uncalibrated_defaults():
    cal = Calibration("base", None, None, 0.5, {"calibrated": False})
    assert cal.confidence_of([np.log(0.25), 0.0, 0.0]) == pytest.approx(0.25)
    assert not cal.should_abstain([0.0, 0.0, 0.0])  # no retriever, no evidence to judge
    assert cal.should_abstain([0.0, 0.1, 0.0]) and not cal.should_abstain([0.0, 0.6, 0.0])
