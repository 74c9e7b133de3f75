"""Prefix context distillation on the tiny model: the teacher's targets are the base model's top-k with the
source chunk in context, training lowers the distillation loss, and the setting round-trips through save/load."""

import json

import torch

from imprint.cli import main
from imprint.methods.prefix.config import PrefixMethodConfig
from imprint.methods.prefix.method import PrefixMethod
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.config import TrainConfig
from imprint.train.data import IGNORE, collate, encode_record
from imprint.train.loop import train
from imprint.train.loss import causal_lm_loss
from imprint.workspace import Workspace

CHUNK = "Priya Raman has served as chief financial officer since March 2019. Leave is 27 days a year."
RECORDS = [
    SynthRecord.make("rules", ["c1"], "qa", question="Who is the CFO?", answer="Priya Raman"),
    SynthRecord.make("rules", ["c1"], "qa", question="How many leave days?", answer="27 days"),
    SynthRecord.make("rules", ["c1"], "text", text="The chief financial officer is Priya Raman."),
    SynthRecord.make("replay", [], "text", text="Water boils at 100 degrees."),
]
CONFIG = PrefixMethodConfig(n_tokens=8, distill=1.0, distill_top_k=8)


def distilled(tmp_path):
    model, tok = tiny_lm()
    method = PrefixMethod()
    prefixed = method.attach(model, CONFIG, tok, CHUNK)
    examples = [encode_record(r, tok, 128) for r in RECORDS]
    sources = [[CHUNK] if r.source_chunk_ids else [] for r in RECORDS]
    return method, prefixed, tok, method.prepare_examples(prefixed, examples, tok, sources, tmp_path)


def test_teacher_targets_are_the_base_models_top_k_with_the_chunk_in_context(tmp_path):
    method, prefixed, tok, examples = distilled(tmp_path)
    e = examples[0]
    labelled = [j for j, label in enumerate(e.labels) if label != IGNORE]
    assert e.teacher_probs[labelled].float().sum(1).allclose(torch.ones(len(labelled)), atol=1e-2)
    assert e.teacher_probs[[j for j in range(len(e.labels)) if j not in labelled]].abs().sum() == 0
    assert examples[3].teacher_ids is None  # replay text has no source: next-token loss only
    context = [tok.bos_token_id] + tok.encode(CHUNK + "\n\n", add_special_tokens=False)
    with torch.no_grad():
        logits = prefixed.base(input_ids=torch.tensor([context + e.input_ids[1:]])).logits[0]
    for j in labelled:  # token j of the record follows teacher position len(context) + j - 2
        expected = logits[len(context) + j - 2].topk(CONFIG.distill_top_k).indices
        assert e.teacher_ids[j].tolist() == expected.tolist()
    cached = list(tmp_path.glob("teacher-*.pt"))
    assert len(cached) == 1
    again = method.prepare_examples(
        prefixed, [encode_record(r, tok, 128) for r in RECORDS], tok, [[CHUNK]] * 3 + [[]], tmp_path
    )
    assert torch.equal(again[0].teacher_ids, e.teacher_ids) and list(tmp_path.glob("teacher-*.pt")) == cached


def test_distillation_loss_drops_and_the_setting_round_trips(tmp_path):
    method, prefixed, tok, examples = distilled(tmp_path)
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        before, _ = causal_lm_loss(prefixed, batch, distill=1.0)
    result = train(prefixed, examples, tok.pad_token_id, TrainConfig(epochs=30, lr=3e-1, batch_tokens=512))
    with torch.no_grad():
        after, _ = causal_lm_loss(prefixed, batch, distill=1.0)
        plain, _ = causal_lm_loss(prefixed, batch)
    assert after < 0.8 * before and result.losses[-1] < result.losses[0]
    assert not torch.isclose(after, plain)  # the distillation targets are not the labels
    files = method.save(prefixed, tmp_path / "module")
    assert json.loads((tmp_path / "module" / "prefix_config.json").read_text())["config"]["distill"] == 1.0
    loaded = method.load(tiny_lm()[0], tmp_path / "module")
    assert loaded.method_config == CONFIG and files
    probe = torch.tensor([examples[0].input_ids])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=probe).logits, prefixed(input_ids=probe).logits)


def test_distillation_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text(CHUNK)
    args = ["learn", str(tmp_path / "a.md"), "--method", "prefix", "--name", "p", "--set", "train.epochs=2"]
    args += ["--set", "train.verify=false"]  # plumbing, not learning: two epochs teach the tiny model nothing
    assert main([*args, "--set", "prefix.distill=0.5", "--set", "prefix.n_tokens=4"]) == 0
    manifest = Workspace.open(tmp_path / "ws").get_module("p").manifest
    assert manifest["config"]["prefix"]["distill"] == 0.5
    # two teacher passes: the prefix's (each record read after its sources) and the base's targets for the replay
    assert len(list((tmp_path / "ws" / "runs" / "p").glob("teacher-*.pt"))) == 2
