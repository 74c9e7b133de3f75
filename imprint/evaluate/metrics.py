"""Answer metrics, SQuAD-style: normalised exact match and token F1, each the best over accepted answers, and
"answer contained": an accepted answer appears, as whole words, inside the output (the measure for continuations,
which go on past the answer)."""

from __future__ import annotations

import math
from collections import Counter

from imprint.answer.normalize import normalize

__all__ = ["answer_contained", "exact_match", "mean", "normalize", "percentile", "ratio_standard_error",
           "standard_error", "token_f1"]  # fmt: skip


def exact_match(prediction: str, answers: list[str]) -> float:
    pred = normalize(prediction)
    return float(any(pred == normalize(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    pred = normalize(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize(answer).split()
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_contained(prediction: str, answers: list[str]) -> float:
    pred = f" {normalize(prediction)} "
    return float(any(normalize(a) and f" {normalize(a)} " in pred for a in answers))


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean of `values` (sample standard deviation / sqrt(n)); None below two values.

    Of paired differences (a module's and the base's score on the same items) it is the standard error of the
    change, which is far smaller than either score's own when the two mostly agree."""
    values = [v for v in values if v is not None]
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)


def ratio_standard_error(numerators: list[float], denominators: list[float]) -> float | None:
    """Standard error of sum(numerators) / sum(denominators) over clusters (e.g. agreeing tokens / tokens per
    sample): tokens of one sample are not independent, so the sample is the unit (linearised ratio estimator)."""
    n, total = len(numerators), sum(denominators)
    if n < 2 or not total:
        return None
    r = sum(numerators) / total
    residuals = [a - r * d for a, d in zip(numerators, denominators, strict=True)]
    return math.sqrt(n / (n - 1) * sum(e * e for e in residuals)) / total
