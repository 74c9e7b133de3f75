"""The runtime half of calibration: a fitted model's features, how it maps an answer's signals to a confidence and
decides to abstain, and where a workspace keeps it. Fitting it on labelled questions is `imprint.evaluate`'s
(`imprint.evaluate.calibration.fit_calibration`, run by `imprint calibrate`).

Signals (`features()`): the answer tokens' mean log-probability, how close in meaning the best evidence sentence
is to the question (retrieval relevance), and how much of the answer the evidence contains (support).
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


def predict(params: dict, x: np.ndarray) -> np.ndarray:
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
        return float(predict(self.confidence, np.asarray([feats]))[0])

    def should_abstain(self, feats: list[float]) -> bool:
        if not self.answerable:
            return feats[1] < DEFAULT_MIN_RELEVANCE and feats[1] > 0
        return float(predict(self.answerable, np.asarray([feats]))[0]) < self.threshold

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


def calibration_path(ws_root: Path, system: str, collection: str = "default") -> Path:
    """Where `system`'s calibration for answers read from `collection` is kept: `calibration/<collection>/`. A fit
    holds the relevance and support of that collection's evidence, so it applies there and nowhere else."""
    return _folder(ws_root, collection) / f"{system.replace('/', '_')}.json"


def _folder(ws_root: Path, collection: str) -> Path:
    from imprint.workspace.db import safe_name

    return ws_root / "calibration" / safe_name(collection, "collection")


def load_calibration(ws_root: Path, system: str, mode: str, collection: str = "default") -> Calibration:
    """The calibration of this exact system (e.g. `module+rag:facts@2`), else of its mode, fitted on `collection`;
    else none. Files of workspaces from before calibrations were kept per collection (`calibration/<system>.json`)
    were fitted on the default collection's passages (or a module's own), and are read for the default collection
    only."""
    folders = [_folder(ws_root, collection)]
    if collection == "default":
        folders.append(ws_root / "calibration")
    for folder in folders:
        for key in (system, mode):
            path = folder / f"{key.replace('/', '_')}.json"
            if path.is_file():
                return Calibration.load(path)
    return uncalibrated(system)
