"""Scorecard arithmetic on hand-made rows: learned (EM, F1, abstention, ECE, judge), cost, system plans."""

import pytest

from imprint.errors import ImprintError
from imprint.evaluate.run import SystemSpec, cost_metrics, learned_metrics, plan_systems


def row(answerable=True, em=0.0, f1=0.0, confidence=0.5, abstained=False, latency=10.0, prompt_tokens=20, judge=None):
    return {
        "answerable": answerable,
        "em": em if answerable else None,
        "f1": f1 if answerable else None,
        "confidence": confidence,
        "abstained": abstained,
        "latency_ms": latency,
        "prompt_tokens": prompt_tokens,
        "judge": judge,
    }


def test_learned_metrics_by_hand():
    rows = [
        row(em=1.0, f1=1.0, confidence=0.9, judge=1.0),
        row(em=0.0, f1=0.5, confidence=0.8, judge=1.0),
        row(em=0.0, f1=0.0, confidence=0.3, abstained=True, judge=0.0),
        row(answerable=False, abstained=True),
        row(answerable=False, abstained=False),
    ]
    choice = [{"correct": 1.0, "correct_norm": 0.0}, {"correct": 0.0, "correct_norm": 0.0}]
    m = learned_metrics(rows, choice)
    assert m["n"] == 3 and m["exact_match"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["token_f1"] == pytest.approx(0.5, abs=1e-4)
    assert m["n_choice"] == 2 and m["choice_accuracy"] == 0.5 and m["choice_accuracy_norm"] == 0.0
    assert m["n_unanswerable"] == 2 and m["abstention_unanswerable"] == 0.5
    assert m["abstention_answerable"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["judge_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    # ECE, 10 bins: 0.9, 0.8 and 0.3 fall in bins 9, 8 and 3, one answer each:
    # (|1 - 0.9| + |0 - 0.8| + |0 - 0.3|) / 3 = 0.4
    assert m["ece"] == pytest.approx(0.4, abs=1e-4)


def test_no_questions_gives_no_numbers():
    m = learned_metrics([], [])
    assert m["exact_match"] is None and m["choice_accuracy"] is None and m["ece"] is None


def test_cost_metrics_by_hand():
    rows = [row(latency=x, prompt_tokens=t) for x, t in ((10, 20), (20, 30), (30, 40), (40, 50))]
    manifest = {"metrics": {"wall_s": 554.2, "tokens": 184540}, "module_bytes": 30_400_000}
    cost = cost_metrics(rows, manifest)
    assert cost == {
        "train_wall_s": 554.2,
        "train_tokens": 184540,
        "module_bytes": 30_400_000,
        "latency_ms_p50": 25.0,
        "latency_ms_p95": 38.5,
        "prompt_tokens_mean": 35.0,
    }
    assert cost_metrics(rows, None)["train_wall_s"] is None


def test_plan_lists_every_system_grouped_by_weights():
    specs = plan_systems(["hb@1", "other@2"])
    assert [(s.name, s.mode, s.weights) for s in specs] == [
        ("base", "base", "base"),
        ("icl", "icl", "base"),
        ("rag", "rag", "base"),
        ("hb@1", "module", "hb@1"),
        ("hb@1+rag", "module+rag", "hb@1"),
        ("other@2", "module", "other@2"),
        ("other@2+rag", "module+rag", "other@2"),
    ]
    assert plan_systems(["hb@1"], ("module",)) == [SystemSpec("hb@1", "module", "hb@1")]
    with pytest.raises(ImprintError, match="unknown system mode"):
        plan_systems([], ("base", "oracle"))
