"""Acceptance on the real embedded model: gemma-3-270m as the `local` generator, on sample corpus documents, gives
every generator strategy records that pass the quality gates, and the summary prints.

A 270M base model invents names, numbers and dates freely, so most of what it writes is dropped (the summary
says how much and why); this test asks only that each strategy keeps some, each one traceable to its chunks."""

import json
from pathlib import Path

import pytest

from imprint.cli import main
from imprint.synth.records import read_records
from imprint.workspace import Workspace

CORPUS = Path(__file__).resolve().parents[2] / "imprint" / "data" / "sample" / "corpus"


@pytest.mark.slow
def test_embedded_model_writes_grounded_records_for_every_strategy(tmp_path, capsys):
    ws_dir = tmp_path / "ws"
    # two documents of the sample corpus (people and expenses: names, dates, amounts) keep the test to a few
    # batches of generation on a 2-core CPU; bench/synth_strategies.py runs the whole corpus
    documents = [str(CORPUS / "02-people.md"), str(CORPUS / "05-expenses.md")]
    assert main(["--workspace", str(ws_dir), "add", *documents]) == 0
    kept = {}
    for strategy in ("paraphrase", "qa", "entigraph", "active-reading"):
        args = ["--workspace", str(ws_dir), "synth", "--strategy", strategy, "--generator", "local"]
        assert main([*args, "--tokens", "600", "--show", "2"]) == 0
        out = capsys.readouterr().out
        assert "quality gates" in out and "generator local:gemma-3-270m" in out
        ws = Workspace.open(ws_dir)
        manifest = json.loads((ws.data_dir(strategy) / "manifest.json").read_text())
        records = read_records(ws.data_dir(strategy))
        chunk_ids = {c.id for c in ws.chunks()}
        assert all(set(r.source_chunk_ids) <= chunk_ids and r.generator == "local:gemma-3-270m" for r in records)
        kept[strategy] = (len(records), manifest["gates"]["candidates"])
    assert all(n > 0 for n, _ in kept.values()), kept
