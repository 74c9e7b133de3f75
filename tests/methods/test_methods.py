"""Every registered method, the same contract: attach -> train a few steps -> loss drops -> save -> load on a
fresh base gives identical logits -> the CLI answers with it."""

import json

import pytest
import torch

from imprint import registry
from imprint.cli import main
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record
from imprint.train.loop import train

RECORDS = [
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="How many leave days?", answer="27 days"),
    SynthRecord.make("rules", ["d:v1:0"], "text", text="Priya Raman has served as chief financial officer."),
]
SETTINGS = {
    "lora": {"r": 8, "alpha": 16},
    "full": {"freeze_embeddings": True},
    "prefix": {"n_tokens": 16},
    "memory": {"n_keys": 32, "knn": 8, "background_texts": 4},
}
LR = {"lora": 3e-2, "full": 3e-3, "prefix": 3e-1, "memory": 1.0}
CLI = {"memory": ["--set", "memory.background_texts=4"]}  # a small self-replay background: the tiny model samples it


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))  # memory's self-replay background lands here


def test_every_registered_method_is_covered():
    assert set(registry.METHODS) == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_method_contract(name, tmp_path):
    method = registry.method(name)()
    model, tok = tiny_lm()
    trainable = method.attach(model, method.config_class(**SETTINGS[name]), tok, "Priya Raman leads finance.")
    examples = [encode_record(r, tok, 256) for r in RECORDS]
    result = train(trainable, examples, tok.pad_token_id, TrainConfig(epochs=40, lr=LR[name], batch_tokens=256))
    assert result.losses[-1] < 0.5 * result.losses[0]
    files = method.save(trainable, tmp_path)
    assert files and all((tmp_path / f).exists() for f in files)
    probe = torch.tensor([encode_record(RECORDS[0], tok, 256).input_ids])
    with torch.no_grad():
        expected = trainable(input_ids=probe).logits
        loaded = method.load(tiny_lm()[0], tmp_path)
        assert torch.equal(loaded(input_ids=probe).logits, expected)
        assert not torch.equal(tiny_lm()[0](input_ids=probe).logits, expected)


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_a_saved_module_loads_trainable_and_training_continues_from_it(name, tmp_path):
    """What `imprint update` starts from: `load(trainable=True)` trains exactly the parameters `attach` trained,
    and the next run starts at the loss the saved module ended at, not at a fresh module's."""
    method = registry.method(name)()
    model, tok = tiny_lm()
    trainable = method.attach(model, method.config_class(**SETTINGS[name]), tok, "Priya Raman leads finance.")
    examples = [encode_record(r, tok, 256) for r in RECORDS]
    first = train(trainable, examples, tok.pad_token_id, TrainConfig(epochs=30, lr=LR[name], batch_tokens=256))
    method.save(trainable, tmp_path)
    again = method.load(tiny_lm()[0], tmp_path, trainable=True)
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(again) == count(trainable) > 0
    more = train(again, examples, tok.pad_token_id, TrainConfig(epochs=1, lr=LR[name], batch_tokens=256))
    assert more.losses[0] <= first.losses[-1] * 1.01 and first.losses[-1] < 0.6 * first.losses[0]


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_method_through_the_cli(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text("Priya Raman has served as chief financial officer since March 2019.")
    learn = [
        "learn",
        str(tmp_path / "a.md"),
        "--method",
        name,
        "--name",
        name,
        "--set",
        "train.epochs=2",
        *CLI.get(name, []),
    ]
    assert main([*learn, "--set", "train.verify=false"]) == 0  # plumbing; learning: tests/train/test_heldin.py
    capsys.readouterr()
    assert main(["ask", "Who is the CFO?", "--module", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["module"] == f"{name}@1"


def test_full_method_freezes_embeddings_only_when_asked():
    method = registry.method("full")()
    frozen = method.attach(tiny_lm()[0], method.config_class(freeze_embeddings=True))
    assert not frozen.get_input_embeddings().weight.requires_grad
    assert all(p.requires_grad for n, p in frozen.named_parameters() if "embed" not in n)
    everything = method.attach(tiny_lm()[0], method.config_class(freeze_embeddings=False))
    assert all(p.requires_grad for p in everything.parameters())
