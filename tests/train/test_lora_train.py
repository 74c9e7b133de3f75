"""LoRA on the tiny model: the loop lowers the loss, and save -> load reproduces the logits exactly."""

import torch

from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.config import TrainConfig
from imprint.train.data import IGNORE, encode_record
from imprint.train.loop import lr_at
from imprint.train.loss import causal_lm_loss

RECORDS = [
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="How many leave days?", answer="27 days"),
    SynthRecord.make("rules", ["d:v1:0"], "text", text="Priya Raman has served as chief financial officer."),
]


def test_qa_records_train_on_the_answer_only():
    _, tok = tiny_lm()
    ex = encode_record(RECORDS[0], tok, 256)
    trained = [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE]
    assert tok.decode(trained) == " Priya Raman" + tok.eos_token
    text = encode_record(RECORDS[2], tok, 256)
    assert text.n_trained == len(text.input_ids) - 1  # everything but <bos>


def test_chunked_loss_equals_plain_cross_entropy():
    model, tok = tiny_lm()
    ex = encode_record(RECORDS[2], tok, 256)
    batch = {
        "input_ids": torch.tensor([ex.input_ids]),
        "attention_mask": torch.ones(1, len(ex.input_ids)),
        "labels": torch.tensor([ex.labels]),
    }
    reference = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    chunked, n = causal_lm_loss(model, batch, chunk=7)
    assert n == len(ex.input_ids) - 1
    assert torch.allclose(chunked, reference, atol=1e-5)


def test_schedule_warms_up_then_decays():
    config = TrainConfig(lr=1.0, warmup=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(step, 100, config) for step in range(100)]
    assert lrs[0] < lrs[9] == 1.0
    assert lrs[-1] < 0.2 and min(lrs[10:]) >= 0.1


def test_blockwise_loss_gradients_match_autograd():
    from imprint.train.loss import blockwise_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (10,))
    for softcap in (None, 3.0):
        for compiled in (False, True):
            fn = lambda h, w, s=softcap, c=compiled: blockwise_cross_entropy(h, w, targets, 3, s, compile=c)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (hidden, weight))


def test_frozen_projection_loss_matches_log_softmax_for_hard_and_soft_targets(monkeypatch):
    """A frozen W (LoRA, prefix) takes the online-softmax path: vocabulary tiles, running max and sum."""
    from imprint.train import loss

    monkeypatch.setattr(loss, "VOCAB_TILE", 16)  # several tiles, the last one partial
    torch.manual_seed(0)
    hidden = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, dtype=torch.float64) * 3
    ids, weights = torch.randint(0, 50, (10, 3)), torch.rand(10, 3)
    reference = -(weights * torch.log_softmax(hidden @ weight.T, -1).gather(1, ids)).sum()
    for compiled in (False, True):
        fn = lambda h, c=compiled: loss.fused_cross_entropy(h, weight, ids, weights, 4, None, c)  # noqa: E731
        assert torch.allclose(fn(hidden), reference)
        assert torch.autograd.gradcheck(fn, (hidden,))
        hard = loss.blockwise_cross_entropy(hidden, weight, ids[:, 0], 3, None, compiled)
        assert torch.allclose(hard, torch.nn.functional.cross_entropy(hidden @ weight.T, ids[:, 0], reduction="sum"))


def test_replay_mixes_the_requested_fraction_from_the_base_models_own_samples(tmp_path, monkeypatch):
    from imprint.models import load_base
    from imprint.train.replay import mix_replay, self_replay

    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path))
    base = load_base("tiny")
    pool = self_replay(base, n_samples=6, max_new_tokens=8)
    assert len(pool) == 6 and all(r.kind == "text" and r.strategy == "replay" for r in pool)
    assert [r.id for r in self_replay(base, n_samples=6, max_new_tokens=8)] == [r.id for r in pool]  # cached
    mixed = mix_replay(RECORDS * 6, pool, 0.25, seed=0)
    assert len(mixed) == 24 and sum(r.strategy == "replay" for r in mixed) == 6
    assert mix_replay(RECORDS, pool, 0.0, seed=0) == RECORDS


def test_output_projection_always_sees_contiguous_input():
    from imprint.models import load_base

    head = load_base("tiny").model.get_output_embeddings()
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    hidden = torch.randn(3, 5, head.in_features)
    for view in (hidden[:, ::2, :], hidden.transpose(0, 1)):
        assert not view.is_contiguous()
        assert torch.equal(head(view), head(view.contiguous()))
    assert seen == [True, True, True, True]
