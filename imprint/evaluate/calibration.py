"""Calibrated confidence and abstention, fitted on a labelled eval set.

Two questions get two models, because they have different labels:
- **confidence** = P(the answer is right), a logistic (Platt) model over the answer's signals, fitted on
  answerable questions scored right or wrong. Its quality is the expected calibration error (ECE).
- **abstention** = P(the corpus holds an answer at all), a logistic model fitted on answerable vs unanswerable
  questions; below a threshold the system says the corpus does not contain the answer. The threshold is the
  highest one that abstains on at most `max_answerable_abstain` of the answerable questions it was fitted on.

Signals (`features()`): the answer tokens' mean log-probability, how close in meaning the best evidence sentence
is to the question (retrieval relevance), and how much of the answer the evidence contains (support). Reported
figures come from k-fold cross-validation, so a threshold is never scored on the questions that chose it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FEATURES = ("logprob", "relevance", "support")
# Without calibration data, abstain when no evidence sentence is this close to the question (MiniLM cosine);
# measured on the sample eval set, answerable questions' best evidence sentence scored 0.37-0.89.
DEFAULT_MIN_RELEVANCE = 0.3


def features(confidence: float, relevance: float | None, support: float | None) -> list[float]:
    """Feature vector of one answer; retrieval signals are 0 where no retriever was used."""
    logprob = math.log(max(confidence, 1e-6))
    return [logprob, relevance or 0.0, support or 0.0]


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


def _predict(params: dict, x: np.ndarray) -> np.ndarray:
    z = ((x - np.asarray(params["mean"])) / np.asarray(params["scale"])) @ np.asarray(params["weights"][:-1])
    return 1.0 / (1.0 + np.exp(-(z + params["weights"][-1])))


@dataclass
class Calibration:
    """A fitted calibration for one system (mode, and module when there is one), stored as JSON."""

    system: str
    confidence: dict | None  # logistic params predicting a right answer
    answerable: dict | None  # logistic params predicting that the corpus holds the answer
    threshold: float  # abstain when P(answerable) < threshold
    report: dict  # cross-validated ECE / abstention figures and the data they came from

    def confidence_of(self, feats: list[float]) -> float:
        if not self.confidence:
            return float(math.exp(feats[0]))
        return float(_predict(self.confidence, np.asarray([feats]))[0])

    def should_abstain(self, feats: list[float]) -> bool:
        if not self.answerable:
            return feats[1] < DEFAULT_MIN_RELEVANCE and feats[1] > 0
        return float(_predict(self.answerable, np.asarray([feats]))[0]) < self.threshold

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        return cls(**json.loads(path.read_text()))


def uncalibrated(system: str) -> Calibration:
    return Calibration(system, None, None, 0.5, {"calibrated": False})


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
    threshold = _threshold(_predict(ans_p, feats), answerable, max_abstain) if ans_p else 0.5
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


def calibration_path(ws_root: Path, system: str) -> Path:
    return ws_root / "calibration" / f"{system.replace('/', '_')}.json"


def load_calibration(ws_root: Path, system: str, mode: str) -> Calibration:
    """The calibration of this exact system (e.g. `module+rag:facts@2`), else of its mode, else none."""
    for key in (system, mode):
        path = calibration_path(ws_root, key)
        if path.is_file():
            return Calibration.load(path)
    return uncalibrated(system)
