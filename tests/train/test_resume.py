"""A training run killed with SIGKILL and resumed ends exactly as an uninterrupted run: no lost or repeated steps."""

import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from imprint.cli import main
from imprint.workspace import Workspace

CORPUS = (
    "# Team\n\nPriya Raman has served as chief financial officer since March 2019. She joined in April 2011. "
    "Employees receive 27 days of paid annual leave per year. Parental leave lasts 22 weeks at full pay.\n"
)
SETTINGS = [
    "--set",
    "train.epochs=16",
    "--set",
    "train.checkpoint_every=5",
    "--set",
    "train.batch_tokens=512",
    "--set",
    "lora.r=4",
    "--set",
    "train.verify=false",  # resuming, not learning, is under test
]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    home = tmp_path / "ws"
    env = {**os.environ, "IMPRINT_HOME": str(home), "IMPRINT_MODEL": "tiny"}
    monkeypatch.setenv("IMPRINT_HOME", str(home))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "team.md").write_text(CORPUS)
    assert main(["add", str(tmp_path / "team.md")]) == 0
    assert main(["synth"]) == 0
    assert main(["train", "--name", "ref", *SETTINGS]) == 0

    checkpoint = home / "runs" / "killed" / "checkpoint.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imprint.cli", "train", "--name", "killed", *SETTINGS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    killed_at = torch.load(checkpoint, weights_only=False)["step"]

    assert main(["train", "--name", "killed", "--resume", *SETTINGS]) == 0
    ws = Workspace.open(home)
    ref, resumed = ws.get_module("ref").manifest["metrics"], ws.get_module("killed").manifest["metrics"]
    assert resumed["resumed_from"] == killed_at > 0
    assert resumed["steps"] == ref["steps"] == len(resumed["loss_curve"])
    assert resumed["loss_curve"] == ref["loss_curve"] and resumed["tokens"] == ref["tokens"]
    a = load_file(home / "modules" / "ref" / "1" / "adapter_model.safetensors")
    b = load_file(home / "modules" / "killed" / "1" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not checkpoint.exists()  # a finished run cleans up after itself


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "team.md").write_text(CORPUS)
    assert main(["add", str(tmp_path / "team.md")]) == 0 and main(["synth"]) == 0
    checkpoint = tmp_path / "ws" / "runs" / "m" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"fingerprint": "other", "step": 3}, checkpoint)
    assert main(["train", "--name", "m", "--resume", "--set", "train.epochs=1"]) == 1
    assert "made with other data or settings" in capsys.readouterr().err
