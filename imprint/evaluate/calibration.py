"""Calibrated confidence and abstention, fitted on a labelled eval set.

Two questions get two models, because they have different labels:
- **confidence** = P(the answer is right), a logistic (Platt) model over the answer's signals, fitted on
  answerable questions scored right or wrong. Its quality is the expected calibration error (ECE).
- **abstention** = P(the corpus holds an answer at all), a logistic model fitted on answerable vs unanswerable
  questions; below a threshold the system says the corpus does not contain the answer. The threshold is the
  highest one that abstains on at most `max_answerable_abstain` of the answerable questions it was fitted on.

Signals: `imprint.answer.calibration.features` (the runtime half, beside answering: the fitted model, applying
it, loading it). Reported figures come from k-fold cross-validation, so a threshold is never scored on the
questions that chose it.
"""

from __future__ import annotations

import math

import numpy as np

from imprint.answer.calibration import Calibration, calibration_path, features, load_calibration, predict, uncalibrated
from imprint.errors import ImprintError

__all__ = ["Calibration", "calibrate", "calibration_path", "expected_calibration_error", "features",
           "fit_calibration", "load_calibration", "uncalibrated"]  # fmt: skip


def expected_calibration_error(confidences, correct, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - mean confidence| weighted by the bin's share."""
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.size == 0:
        return 0.0
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() / conf.size * abs(hit[mask].mean() - conf[mask].mean())
    return float(total)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised L2 logistic regression; returns (mean, scale, weights with bias last)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-6
    if len(set(y.tolist())) < 2:  # one class only: a constant model at that class's rate
        bias = 6.0 if y.mean() > 0.5 else -6.0
        return mean, scale, np.r_[np.zeros(x.shape[1]), bias]
    model = LogisticRegression(C=1.0 / l2).fit((x - mean) / scale, y)
    return mean, scale, np.r_[model.coef_[0], model.intercept_[0]]


def _threshold(p_answerable: np.ndarray, answerable: np.ndarray, max_answerable_abstain: float) -> float:
    """Highest threshold abstaining on at most the allowed share of answerable questions."""
    scores = np.sort(p_answerable[answerable == 1])
    if scores.size == 0:
        return 0.5
    allowed = int(math.floor(max_answerable_abstain * scores.size))
    return float(scores[allowed]) if allowed < scores.size else float(scores[-1] + 1e-9)


def _fit(feats: np.ndarray, correct: np.ndarray, answerable: np.ndarray, max_abstain: float):
    conf = _fit_logistic(feats[answerable == 1], correct[answerable == 1]) if answerable.any() else None
    ans = _fit_logistic(feats, answerable) if len(set(answerable.tolist())) == 2 else None
    conf_p = None if conf is None else dict(zip(("mean", "scale", "weights"), (a.tolist() for a in conf), strict=True))
    ans_p = None if ans is None else dict(zip(("mean", "scale", "weights"), (a.tolist() for a in ans), strict=True))
    threshold = _threshold(predict(ans_p, feats), answerable, max_abstain) if ans_p else 0.5
    return conf_p, ans_p, threshold


def fit_calibration(
    system: str, rows: list[dict], max_answerable_abstain: float = 0.1, folds: int = 5, seed: int = 0
) -> Calibration:
    """Fit on rows of {features, correct, answerable}; the report holds k-fold cross-validated figures."""
    feats = np.asarray([r["features"] for r in rows], dtype=float)
    correct = np.asarray([float(r["correct"]) for r in rows])
    answerable = np.asarray([1.0 if r.get("answerable", True) else 0.0 for r in rows])
    order = np.random.default_rng(seed).permutation(len(rows))
    held_conf, held_abstain = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(order, test)
        conf_p, ans_p, threshold = _fit(feats[train], correct[train], answerable[train], max_answerable_abstain)
        cal = Calibration(system, conf_p, ans_p, threshold, {})
        for i in test:
            held_conf[i] = cal.confidence_of(feats[i].tolist())
            held_abstain[i] = cal.should_abstain(feats[i].tolist())
    conf_p, ans_p, threshold = _fit(feats, correct, answerable, max_answerable_abstain)
    on_answerable = answerable == 1
    raw = np.exp(feats[:, 0])
    report = {
        "calibrated": True,
        "n": len(rows),
        "n_unanswerable": int((~on_answerable).sum()),
        "folds": folds,
        "ece_raw": round(expected_calibration_error(raw[on_answerable], correct[on_answerable]), 4),
        "ece_cv": round(expected_calibration_error(held_conf[on_answerable], correct[on_answerable]), 4),
        "abstain_unanswerable_cv": _rate(held_abstain[~on_answerable]),
        "abstain_answerable_cv": _rate(held_abstain[on_answerable]),
        "accuracy_answered_cv": _rate(correct[on_answerable & ~held_abstain] == 1),
        "rows": [dict(r, held_out_abstained=bool(a)) for r, a in zip(rows, held_abstain, strict=True)],
    }
    return Calibration(system, conf_p, ans_p, threshold, report)


def _rate(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if mask.size else None


def check_items(items) -> None:
    """Calibration fits P(right) on answerable questions with their answers: a set without one cannot be fitted."""
    if not any(i.answers for i in items):
        raise ImprintError(
            f"none of the {len(items)} questions has an answer to score against: calibration needs answerable "
            "questions (with `answers`); unanswerable ones only teach abstention beside them"
        )


def calibrate(system, items, eval_paths: list, root, min_f1: float = 0.5, max_answerable_abstain: float = 0.1,
              progress=None) -> Calibration:  # fmt: skip
    """`imprint calibrate` for one system: answer `items` with `system` (an `imprint.system.System`) on raw
    signals, fit, record what it was fitted on, and save it where answering finds it (in workspace `root`, per
    collection)."""
    from imprint.evaluate.metrics import exact_match, token_f1

    check_items(items)
    system.calibration = None  # fit on raw signals, not on a previous calibration's output
    answers = system.answer([i.question for i in items], progress=progress)
    rows = [
        {
            "id": i.id,
            "features": [a.signals["logprob"], a.signals["relevance"], a.signals["support"]],
            "correct": bool(i.answers) and token_f1(a.guess, list(i.answers)) >= min_f1,
            "answerable": getattr(i, "answerable", bool(i.answers)),
        }
        for i, a in zip(items, answers, strict=True)
    ]
    cal = fit_calibration(system.name, rows, max_answerable_abstain=max_answerable_abstain)
    scored = [(i, a) for i, a in zip(items, answers, strict=True) if i.answers]
    cal.report.update(
        {
            "eval_sets": [str(p) for p in eval_paths],
            "correct_if_f1_at_least": min_f1,
            "exact_match": round(sum(exact_match(a.guess, list(i.answers)) for i, a in scored) / len(scored), 4),
            "token_f1": round(sum(token_f1(a.guess, list(i.answers)) for i, a in scored) / len(scored), 4),
        }
    )
    cal.report["collection"] = system.collection
    cal.save(calibration_path(root, system.name, system.collection))
    return cal
