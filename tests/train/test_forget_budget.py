"""The forgetting budget: training watches the base's own samples on held-out general prompts and halves the
learning rate (then stops) while the model drifts past the budget; a budget never reached changes nothing."""

import warnings

import pytest
import torch

from imprint.evaluate.forgetting import RETENTION_PROMPTS
from imprint.methods.lora.config import LoraMethodConfig
from imprint.methods.lora.method import LoraMethod
from imprint.models import load_base
from imprint.pipeline import forgetting_watch
from imprint.synth.records import SynthRecord
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record
from imprint.train.loop import MIN_LR_SCALE, OverBudget, train
from imprint.train.replay import PROMPTS, WATCH_PROMPTS

RECORDS = [
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", ["d:v1:0"], "text", text="Priya Raman has served as chief financial officer."),
    SynthRecord.make("rules", ["d:v1:0"], "text", text="Employees receive 27 days of paid annual leave per year."),
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))


def run(**settings):
    base = load_base("tiny")
    config = TrainConfig(epochs=12, batch_tokens=64, pack=False, compile="off", forget_samples=4, **settings)
    drift = forgetting_watch(base, config)  # the base, scored before the adapter exists
    torch.manual_seed(0)
    lora = LoraMethod().attach(base.model, LoraMethodConfig(r=4, alpha=8))
    examples = [encode_record(r, base.tokenizer, 128) for r in RECORDS]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(lora, examples, base.tokenizer.pad_token_id, config, drift=drift)
    return result, [w for w in caught if issubclass(w.category, OverBudget)]


def test_watch_prompts_are_neither_trained_nor_graded():
    assert not set(WATCH_PROMPTS) & set(PROMPTS) and not set(WATCH_PROMPTS) & set(RETENTION_PROMPTS)
    assert len(set(WATCH_PROMPTS)) == len(WATCH_PROMPTS) >= 16


def test_drift_past_the_budget_halves_the_learning_rate_then_stops():
    result, warned = run(lr=0.05, forget_budget=1e-6, forget_every=2)
    assert result.drift and all(step % 2 == 0 for step, _ in result.drift)
    over = [step for step, delta in result.drift if delta > 1e-6]
    assert result.lr_scale == pytest.approx(MIN_LR_SCALE)  # halved at 4 checks over budget, stopped at the 5th
    assert len(over) == 5 and result.stopped.startswith("forgetting budget")
    assert result.steps == over[-1] == result.drift[-1][0] < 12 * len(RECORDS)  # ended early, at that check
    assert len(warned) == 5 and "learning rate halved" in str(warned[0].message)


def test_a_budget_never_reached_changes_nothing():
    watched, warned = run(lr=1e-3, forget_budget=100.0, forget_every=3)
    plain, _ = run(lr=1e-3, forget_budget=0.0)
    assert watched.drift and not warned and watched.lr_scale == 1.0 and not watched.stopped
    assert watched.losses == plain.losses and not plain.drift
