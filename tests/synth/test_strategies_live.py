"""Every generator strategy end to end with real generators on the tiny model: `imprint serve` on 127.0.0.1 (and
the fault-injecting test server for both endpoints) through the `openai` generator, and the in-process `local`
generator. The tiny model writes random bytes, so these tests prove the
transport, the multi-step plumbing, the journal and the gate accounting; what is kept is for the scripted tests
(test_engine.py) and the real-model test to judge."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from imprint import pipeline
from imprint.cli import main
from imprint.synth.records import read_records

STEPS = {
    "paraphrase": {"paraphrase.encyclopedia", "paraphrase.plain", "paraphrase.dialogue"},
    "qa": {"qa.factual", "qa.why_how", "qa.compare"},
    "entigraph": {"entigraph.entities", "entigraph.pair", "entigraph.triple"},
    "active-reading": {"active_reading.propose", "active_reading.apply"},
}


def check_dataset(ws, manifest, name, generator_name):
    directory = ws.data_dir(name)
    gates, run = manifest["gates"], manifest["run"]
    assert (
        gates["candidates"]
        == gates["kept"] + sum(gates["dropped"].values())
        == manifest["n_records"] + sum(gates["dropped"].values())
    )
    assert len((directory / "dropped.jsonl").read_text().splitlines()) == sum(gates["dropped"].values())
    journal = [json.loads(line) for line in (directory / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == len({e["key"] for e in journal}) == run["units"] > 0
    steps = {e["step"] for e in journal}
    assert steps <= STEPS[name] and len(steps) >= 2  # several prompts; multi-step strategies ran their follow-ups
    assert steps & {"entigraph.pair", "active_reading.apply"} or name in ("paraphrase", "qa")
    assert {e["generator"] for e in journal} == {generator_name} == {manifest["generator"]}
    assert manifest["tokens_generated"] == sum(e["n_tokens"] for e in journal)
    assert set(manifest["templates"]) >= STEPS[name]
    for r in read_records(directory):
        assert r.generator == generator_name and r.meta["template"] in manifest["templates"]
        assert r.meta["template_version"] == manifest["templates"][r.meta["template"]]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_strategy_over_http(ws, imprint_server, short_templates, name):
    url = imprint_server
    overrides = {"generator": {"base_url": url}, "synth": {"templates": short_templates}}
    manifest = pipeline.synth(ws, name, overrides=overrides, generator="openai", tokens=150, model="tiny")
    check_dataset(ws, manifest, name, f"openai:tiny@{url}")
    assert manifest["run"]["units_generated"] == manifest["run"]["units"]
    assert manifest["tokens_budget"] == 150 and manifest["tokens_generated"] >= 150 * 0.5


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_both_endpoints_of_the_test_server(ws, server, short_templates, api):
    url, state = server
    overrides = {"generator": {"base_url": url, "api": api}, "synth": {"templates": short_templates}}
    manifest = pipeline.synth(ws, "qa", overrides=overrides, generator="openai", tokens=100, model="tiny")
    check_dataset(ws, manifest, "qa", f"openai:tiny@{url}")
    assert [r["path"] for r in state.requests] == [f"/v1/{'chat/' if api == 'chat' else ''}completions"] * len(
        state.requests
    )
    assert len(state.requests) == manifest["run"]["units_generated"]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_strategy_with_the_local_generator(ws, short_templates, name):
    overrides = {"synth": {"templates": short_templates}}
    manifest = pipeline.synth(ws, name, overrides=overrides, generator="local", tokens=150, model="tiny")
    check_dataset(ws, manifest, name, "local:tiny")
    again = pipeline.synth(ws, name, overrides=overrides, generator="local", tokens=150, model="tiny")  # journal
    assert again["run"]["units_cached"] == again["run"]["units"] and again["gates"] == manifest["gates"]


def test_cli_synth_prints_the_gate_summary(ws, imprint_server, short_templates, monkeypatch, capsys):
    url = imprint_server
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    args = ["--workspace", str(ws.root), "synth", "--strategy", "paraphrase", "--generator", "openai"]
    args += ["--set", f"synth.templates={short_templates}"]
    assert main([*args, "--base-url", url, "--tokens", "300", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert f"generator openai:tiny@{url}" in out and "quality gates" in out and "paraphrase.plain" in out
    assert "tokens generated of a 300 budget" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategy", "paraphrase", "--generator", "none"], "needs a generator"),
        (["--strategy", "rules", "--tokens", "5k"], "uses no generator"),
        (["--strategy", "rules", "--set", "generator.model=x"], "uses no generator"),
        (["--strategy", "qa", "--tokens", "lots"], "--tokens 'lots'"),
        (["--strategy", "qa", "--set", "generator.api=grpc"], "api must be"),
        (["--strategy", "qa", "--set", "gates.bogus=1"], "unknown setting gates.bogus"),
        (["--strategy", "trivia"], "unknown strategy 'trivia'"),
        (["--strategy", "qa", "--generator", "openai", "--base-url", "http://127.0.0.1:9/v1"], "cannot reach"),
    ],
)
def test_cli_errors_are_one_line_and_store_nothing(ws, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    monkeypatch.setenv("IMPRINT_GENERATOR_API_KEY", "x")
    assert main(["--workspace", str(ws.root), "synth", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error:") and message in err and "\n" not in err
    assert ws.datasets() == []


def test_killed_run_resumes_from_its_journal(ws, short_templates):
    args = ["--workspace", str(ws.root), "synth", "--strategy", "paraphrase", "--generator", "local"]
    args += ["--model", "tiny", "--tokens", "300", "--set", f"synth.templates={short_templates}"]
    args += ["--set", "generator.batch_size=2"]  # small batches: the journal grows while the run goes on
    cmd = [sys.executable, "-m", "imprint.cli", *args]
    journal = ws.data_dir("paraphrase") / "journal.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (journal.exists() and journal.read_text().count("\n") >= 4):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = journal.read_text().count("\n")
    assert main(args) == 0
    manifest = json.loads((ws.data_dir("paraphrase") / "manifest.json").read_text())
    assert manifest["run"]["units_cached"] == done > 0
    assert manifest["run"]["units_generated"] == manifest["run"]["units"] - manifest["run"]["units_cached"]
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == manifest["run"]["units"]
    ids = [r.id for r in read_records(ws.data_dir("paraphrase"))]
    assert len(ids) == len(set(ids))
