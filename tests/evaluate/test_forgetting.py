"""Self-retention on the tiny model: held-out prompts, cached samples, NLL and top-1 agreement by hand."""

import math
import sys

import pytest
import torch

from imprint.evaluate.forgetting import (
    RETENTION_PROMPTS,
    compare_to_base,
    lm_eval_available,
    retention_samples,
    run_lm_eval,
    score_samples,
)
from imprint.models import load_base
from imprint.train.replay import PROMPTS as REPLAY_PROMPTS


def test_retention_prompts_are_held_out_from_training_replay():
    assert not set(RETENTION_PROMPTS) & set(REPLAY_PROMPTS)
    assert len(set(RETENTION_PROMPTS)) == len(RETENTION_PROMPTS) >= 32


@pytest.fixture
def base(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    return load_base("tiny")


def test_samples_are_made_once_per_base_and_cached(base, tmp_path):
    first = retention_samples(base, n=3, max_new_tokens=6, seed=7)
    files = list((tmp_path / "cache" / "retention").glob("tiny-n3-t6-s7.jsonl"))
    assert len(files) == 1 and len(first) == 3
    assert [s["prompt"] for s in first] == RETENTION_PROMPTS[:3]
    assert all(0 < len(s["sample_ids"]) <= 6 for s in first)
    state = torch.random.get_rng_state()
    assert retention_samples(base, n=3, max_new_tokens=6, seed=7) == first  # read back, not resampled
    assert torch.equal(state, torch.random.get_rng_state())


def test_nll_and_top1_agreement_by_hand(base):
    samples = [{"prompt_ids": [2, 70, 71], "sample_ids": [72, 73, 74]}, {"prompt_ids": [2, 80], "sample_ids": [81]}]
    scored = score_samples(base.model, samples)
    # by hand: one full forward per sample, -log p of each sampled token at the position before it
    nll, argmax = 0.0, []
    for s in samples:
        ids = s["prompt_ids"] + s["sample_ids"]
        with torch.no_grad():
            logprobs = base.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        for i, token in enumerate(s["sample_ids"]):
            position = len(s["prompt_ids"]) + i - 1
            nll -= float(logprobs[position, token])
            argmax.append(int(logprobs[position].argmax()))
    assert scored["tokens"] == 4 and scored["nll"] == pytest.approx(nll / 4, abs=1e-4)
    assert torch.cat(scored["top1"]).tolist() == argmax

    same = compare_to_base(scored, scored)
    assert same["nll_delta"] == 0 and same["top1_agreement"] == 1.0

    uniform = load_base("tiny").model
    with torch.no_grad():
        uniform.get_input_embeddings().weight.zero_()  # every logit 0: nll = log V exactly, argmax = token 0
    flat = score_samples(uniform, samples)
    assert flat["nll"] == pytest.approx(math.log(260), abs=1e-4)
    moved = compare_to_base(flat, scored)
    agree = sum(a == 0 for a in argmax) / 4
    assert moved["top1_agreement"] == agree and moved["nll_delta"] == pytest.approx(math.log(260) - nll / 4, abs=1e-3)
    assert same["top1_agreement_se"] == 0 and same["nll_delta_se"] == 0 and same["samples"] == 2
    # by hand, the sample as the unit: residuals of each sample's sum against the pooled ratio, n/(n-1) corrected
    agree_per = [sum(a == 0 for a in argmax[:3]), int(argmax[3] == 0)]
    residuals = [agree_per[0] - agree * 3, agree_per[1] - agree * 1]
    assert moved["top1_agreement_se"] == pytest.approx(math.sqrt(2 * sum(e * e for e in residuals)) / 4, abs=1e-4)
    assert moved["nll_delta_se"] is not None and moved["nll_delta_se"] >= 0


def test_lm_eval_is_skipped_with_a_note_when_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed (it is, in the test extra)
    assert not lm_eval_available()
    result = run_lm_eval("/nonexistent", None, ["hellaswag"])
    assert result == {"skipped": "lm-evaluation-harness is not installed (pip install lm-eval)"}
