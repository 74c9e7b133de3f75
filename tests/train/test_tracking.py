"""Experiment tracking from the loop: TensorBoard event files hold every step's loss; missing trackers fail early."""

import importlib.util

import pytest

from imprint.cli import main
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record
from imprint.train.loop import train

RECORDS = [
    SynthRecord.make("rules", [], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", [], "text", text="Priya Raman has served as chief financial officer."),
]


def test_tensorboard_events_hold_the_loss_lr_and_speed_of_every_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tok = tiny_lm()
    for p in model.parameters():
        p.requires_grad_(True)
    examples = [encode_record(r, tok, 128) for r in RECORDS * 4]
    config = TrainConfig(epochs=3, lr=1e-3, batch_tokens=128, log="tensorboard")
    result = train(model, examples, tok.pad_token_id, config, log_dir=tmp_path / "runs" / "m")
    events = EventAccumulator(str(tmp_path / "runs" / "m" / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, result.steps + 1))
    assert [e.value for e in losses] == pytest.approx(result.losses, rel=1e-6)
    assert len(events.Scalars("train/lr")) == result.steps
    assert all(e.value > 0 for e in events.Scalars("train/tokens_per_s"))


@pytest.mark.parametrize("kind", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_fails_before_training(kind, tmp_path, monkeypatch, capsys):
    if importlib.util.find_spec(kind) is not None:
        pytest.skip(f"{kind} is installed here")
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text("Priya Raman has served as chief financial officer since March 2019.")
    assert main(["learn", str(tmp_path / "a.md"), "--name", "m", "--set", f"train.log={kind}"]) == 1
    err = capsys.readouterr().err
    assert f"train.log={kind} needs the {kind} package" in err and "imprint[track]" in err
    assert not (tmp_path / "ws" / "runs" / "m").exists()


def test_an_unknown_tracker_is_a_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text("Priya Raman has served as chief financial officer since March 2019.")
    assert main(["learn", str(tmp_path / "a.md"), "--set", "train.log=neptune"]) == 1
    assert "train.log must be tensorboard, wandb or mlflow" in capsys.readouterr().err
