"""A module proves it learned: at the end of `learn`/`train`, its own training questions are answered by the module
and by the base; the figure goes in the manifest, and a module no better than the base fails the run (exit 1,
one line, not registered)."""

import json

import pytest

from imprint.cli import main
from imprint.evaluate.heldin import HeldIn
from imprint.synth.records import SynthRecord
from imprint.workspace import Workspace

FACT = "Priya Raman has served as chief financial officer since March 2019."


@pytest.fixture
def ws_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text(FACT)
    return tmp_path / "ws"


def test_a_module_that_learned_passes_and_records_the_figure(ws_dir, tmp_path, capsys):
    args = ["learn", str(tmp_path / "a.md"), "--name", "m", "--set", "train.epochs=30", "--set", "train.lr=3e-2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "held-in recall on" in out and "training questions: module F1" in out
    heldin = json.loads((ws_dir / "modules" / "m" / "1" / "manifest.json").read_text())["heldin"]
    assert heldin["passed"] and heldin["kind"] == "qa" and heldin["n"] >= 3
    assert heldin["module"]["f1"] >= heldin["base"]["f1"] + 0.05


def test_a_module_no_better_than_the_base_fails_the_run(ws_dir, tmp_path, capsys):
    assert main(["learn", str(tmp_path / "a.md"), "--name", "m", "--set", "train.epochs=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("imprint: error: training failed: module m learned nothing measurable (held-in recall")
    assert "it was not registered" in err and "train.epochs" in err
    assert [m.name for m in Workspace.open(ws_dir).modules()] == []
    failed = json.loads((ws_dir / "runs" / "m" / "failed" / "manifest.json").read_text())
    assert failed["heldin"]["passed"] is False
    assert not (ws_dir / "runs" / "m" / "checkpoint.pt").exists()


def test_text_only_data_is_checked_by_its_loss(ws_dir, tmp_path, capsys):
    assert main(["add", str(tmp_path / "a.md")]) == 0 and main(["synth", "--strategy", "raw"]) == 0
    assert main(["train", "--name", "t", "--set", "train.epochs=20", "--set", "train.lr=3e-2"]) == 0
    out = capsys.readouterr().out
    assert "held-in loss on 1 training texts" in out
    heldin = Workspace.open(ws_dir).get_module("t").manifest["heldin"]
    assert heldin["kind"] == "text" and heldin["module"]["nll"] <= heldin["base"]["nll"] - 0.05


def test_the_sample_prefers_questions_and_is_seeded():
    qa = [SynthRecord.make("rules", [], "qa", question=f"q{i}?", answer=f"a{i}") for i in range(50)]
    text = [SynthRecord.make("rules", [], "text", text=f"t{i}") for i in range(5)]
    a, b = HeldIn.sample(qa + text, 8, seed=1), HeldIn.sample(qa + text, 8, seed=1)
    assert a.kind == "qa" and len(a.records) == 8 and a.records == b.records
    assert HeldIn.sample(qa + text, 8, seed=2).records != a.records
    assert HeldIn.sample(text, 8).kind == "text" and len(HeldIn.sample(text, 8).records) == 5
    assert HeldIn.sample([], 8) is None
    verdict = HeldIn.sample(qa, 4).verdict({"f1": 0.1, "em": 0.0}, {"f1": 0.12, "em": 0.0})
    assert verdict["passed"] is False  # better, but within the margin
