"""Distilled replay (`train.replay_distill`): replay records are trained towards the base model's own next-token
distribution (its top-k, computed once before training) instead of the sampled tokens, which keeps the module
closer to the base where the corpus says nothing."""

from pathlib import Path

import pytest
import torch

from imprint import pipeline
from imprint.methods.lora.method import LoraMethod
from imprint.models import load_base
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.config import TrainConfig
from imprint.train.data import IGNORE, encode_record
from imprint.train.replay import self_replay
from imprint.train.teacher import teacher_targets
from imprint.workspace import Workspace

DOCS = {
    "harbour.md": "# Harbour\n\nThe Dunmere harbour was dredged in 1911 by the engineer Alma Voss. "
    "Its lighthouse burns whale oil.\n\nFerries to Kell leave at dawn.",
    "mill.md": "# Mill\n\nThe Sorrel mill grinds rye with a water wheel of oak. Miriam Hale ran it from 1902 to "
    "1930.\n\nFlour goes to Kell by barge.",
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("replay-distill")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))  # the base's replay samples are cached per test run
        (tmp_path / "docs").mkdir()
        for name, text in DOCS.items():
            (tmp_path / "docs" / name).write_text(text)
        workspace = Workspace.open(tmp_path / "ws")
        pipeline.add(workspace, [str(tmp_path / "docs")], model="tiny", max_tokens=40)
        pipeline.synth(workspace, "rules")
        yield workspace


def test_teacher_targets_are_the_base_top_k_after_the_bos_context():
    model, tok = tiny_lm()
    record = SynthRecord.make("replay", [], "text", generator="self:tiny", text="The old mill grinds rye by the river.")
    example = encode_record(record, tok, 128)
    (out,) = teacher_targets(model, tok, [example], {0: [tok.bos_token_id]}, top_k=8)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([example.input_ids])).logits[0].float(), -1)
    labelled = [j for j, label in enumerate(example.labels) if label != IGNORE]
    assert labelled and out.teacher_ids.shape == (len(example.input_ids), 8)
    for j in labelled:  # token j is predicted at position j - 1
        top = probs[j - 1].topk(8)
        assert out.teacher_ids[j].tolist() == top.indices.tolist()
        expected = top.values / top.values.sum()
        assert torch.allclose(out.teacher_probs[j].float(), expected, atol=2e-3)
    assert not out.teacher_probs[0].any()  # the first token has no prediction


def test_distilled_replay_is_the_default_and_its_weight_is_validated():
    assert TrainConfig().replay > 0 and TrainConfig().replay_distill == 1.0
    assert TrainConfig(replay=0.0).replay_distill == 1.0  # allowed: nothing to weigh, a no-op (see the pipeline test)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrainConfig(replay=0.3, replay_distill=1.5)


def _kl_to_base(module_dir: Path, texts: list[str]) -> float:
    """Mean KL(base || module) per token over `texts`, in nats."""
    base = load_base("tiny")
    with torch.no_grad():
        before = [torch.log_softmax(base.model(**base.tokenizer(t, return_tensors="pt")).logits[0].float(), -1)
                  for t in texts]  # fmt: skip
        module = LoraMethod().load(base.model, module_dir)
        total, n = 0.0, 0
        for text, p in zip(texts, before, strict=True):
            q = torch.log_softmax(module(**base.tokenizer(text, return_tensors="pt")).logits[0].float(), -1)
            total += float((p.exp() * (p - q)).sum())
            n += p.shape[0]
    return total / n


def test_distilled_replay_stays_closer_to_the_base_than_sampled_replay(ws, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(ws.root.parent / "cache"))
    dataset = ws.datasets()[0].name
    common = {"epochs": "6", "lr": "1e-2", "replay": "0.5", "verify": "false", "checkpoint_every": "0",
              "compile": "off", "batch_tokens": "256"}  # fmt: skip
    sampled = pipeline.train_module(ws, [dataset], "sampled", "lora", "tiny", {"train": common | {"replay_distill": 0}})
    distilled = pipeline.train_module(ws, [dataset], "distilled", "lora", "tiny", {"train": common})  # the default
    assert sampled["n_replay_records"] == distilled["n_replay_records"] > 0
    assert distilled["config"]["train"]["replay_distill"] == 1.0 and sampled["config"]["train"]["replay_distill"] == 0
    assert list((ws.root / "runs" / "distilled").glob("teacher-*.pt"))  # the base's targets, cached for a resume
    assert all(x is not None for x in distilled["metrics"]["loss_curve"])  # finite throughout
    texts = [r.text for r in self_replay(load_base("tiny"))[:16]]  # what both trained on as replay
    kl_sampled = _kl_to_base(ws.module_dir("sampled", 1), texts)
    kl_distilled = _kl_to_base(ws.module_dir("distilled", 1), texts)
    assert kl_distilled < 0.5 * kl_sampled, (kl_distilled, kl_sampled)
    assert not list((ws.root / "runs" / "sampled").glob("teacher-*.pt"))


def test_no_replay_means_no_teacher_pass(ws, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(ws.root.parent / "cache"))
    train = {"epochs": "1", "replay": "0", "verify": "false", "checkpoint_every": "0", "compile": "off"}
    out = pipeline.train_module(ws, [ws.datasets()[0].name], "plain", "lora", "tiny", {"train": train})
    assert out["n_replay_records"] == 0 and out["config"]["train"]["replay_distill"] == 1.0
    assert not list((ws.root / "runs" / "plain").glob("teacher-*.pt"))
