"""An update proves it learned what is new: `imprint update` with the held-in check on (train.verify, the default)
answers a sample of the version's *new* records with the new version and with its parent, and fails unless the new
version beats the parent. A parent already beats the base on everything it learned, so a check against the base
would pass an update that learned nothing new (the second test shows one such update failing). Every case runs the
check for real on the tiny model: one short fact per document, a high learning rate and many epochs teach it in
seconds (as in tests/train/test_heldin.py). Covered: LoRA in the default collection, full fine-tuning in a named
collection, and the leakage check of an update reading its parent's data."""

import json

from imprint.cli import main
from imprint.synth.records import read_records
from imprint.workspace import Workspace

OLD = "Priya Raman has served as chief financial officer since March 2019."
NEW = "Marco Silva has served as head of engineering since June 2021."
# what teaches the tiny model one short fact in seconds: many epochs at a high rate per method (the first version as
# in tests/train/test_heldin.py); an update, whose data also replays the unchanged document, takes twice the epochs
# (measured: LoRA F1 0.83 at 60 epochs, 0.07 at 30), no warm-up and no general replay (the base model's samples
# take minutes here)
LR = {"lora": "3e-2", "full": "1e-2"}
LEARN = ["--set", "train.epochs=30", "--set", "train.read=0"]
UPDATE = ["--set", "train.epochs=60", "--set", "train.read=0", "--set", "train.warmup=0", "--set", "update.general=0"]


def _setup(tmp_path, collection="default", method="lora"):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "people.md").write_text(f"# People\n\n{OLD}\n")
    learn = ["learn", str(folder), "--name", "m", "--collection", collection, "--method", method, *LEARN]
    assert main([*learn, "--set", f"train.lr={LR[method]}"]) == 0
    (folder / "offices.md").write_text(f"# Offices\n\n{NEW}\n")
    assert main(["add", str(folder), "--collection", collection]) == 0
    return folder


def _new_questions(ws, manifest) -> list:
    """The update's question records made from the added document (offices.md), not replayed from people.md."""
    offices = {c.id for c in ws.chunks(collection=manifest["collection"]) if "Marco Silva" in c.text}
    records = read_records(ws.data_dir(manifest["datasets"][0]))
    return [r for r in records if r.kind == "qa" and set(r.source_chunk_ids) <= offices]


def test_a_lora_update_is_checked_against_its_parent_on_the_new_records(cli_ws, tmp_path, capsys):
    _setup(tmp_path)
    capsys.readouterr()
    assert main(["update", "m", *UPDATE, "--set", "train.lr=3e-2"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    ws = Workspace.open(cli_ws)
    v1, v2 = ws.get_module("m", 1).manifest, ws.get_module("m", 2).manifest
    heldin = v2["heldin"]
    assert heldin["passed"] and heldin["against"] == "m@1" and "base" not in heldin
    assert heldin["module"]["f1"] >= heldin["parent"]["f1"] + 0.05
    # sampled from the new records only: every question about the added document, none of the replayed ones
    new = _new_questions(ws, v2)
    assert v2["update"]["n_unchanged_records"] > 0 and heldin["kind"] == "qa" and heldin["n"] == min(32, len(new))
    assert f"held-in recall on {heldin['n']} new training questions: module F1" in out and "vs parent m@1 F1" in out
    assert v1["heldin"]["passed"] and "base" in v1["heldin"]  # a first version is still checked against the base


def test_an_update_that_learns_nothing_new_fails_although_its_parent_beats_the_base(cli_ws, tmp_path, capsys):
    """A learning rate too small to move anything leaves the update equal to its parent, which learned people.md:
    against the base on all its records (people.md's are replayed in the update) it would pass; against the parent
    on the new ones it fails, and nothing is registered."""
    _setup(tmp_path)
    capsys.readouterr()
    assert main(["update", "m", *UPDATE, "--set", "train.epochs=1", "--set", "train.lr=1e-12"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines: one line
    assert err.startswith("imprint: error: training failed: module m learned nothing measurable beyond m@1 (")
    assert "new training questions" in err and "vs parent m@1" in err and "it was not registered" in err
    ws = Workspace.open(cli_ws)
    assert [(m.name, m.version) for m in ws.modules()] == [("m", 1)] and ws.current_versions() == {"m": 1}
    failed = json.loads((cli_ws / "runs" / "m" / "failed" / "manifest.json").read_text())
    assert failed["heldin"]["passed"] is False and failed["heldin"]["against"] == "m@1"
    assert failed["heldin"]["module"]["f1"] < failed["heldin"]["parent"]["f1"] + 0.05
    # not vacuous: the parent did learn its own records, and the failed update trained on them too
    v1 = ws.get_module("m", 1).manifest["heldin"]
    assert v1["passed"] and v1["module"]["f1"] >= v1["base"]["f1"] + 0.05
    assert failed["update"]["n_unchanged_records"] > 0


def test_a_full_fine_tune_in_a_named_collection_is_updated_checked_and_its_lineage_checked_for_leaks(
    cli_ws, tmp_path, capsys
):
    """The update trains on the added document only (no unchanged records) yet keeps m@1's weights: it must beat
    m@1 on the new questions, and a question copied from m@1's data is a leak of m@2."""
    _setup(tmp_path, collection="hr", method="full")
    only_new = ["--set", "update.unchanged=0", "--set", "update.min_records=0"]
    assert main(["update", "m", *UPDATE, *only_new, "--set", f"train.lr={LR['full']}"]) == 0
    ws = Workspace.open(cli_ws)
    v1, v2 = ws.get_module("m", 1), ws.get_module("m", 2)
    assert v2.method == "full" and v2.collection == "hr" == v2.manifest["collection"] and v2.parent_version == 1
    assert (
        v2.manifest["corpus_version"] == ws.corpus_version("hr") and v2.manifest["update"]["n_unchanged_records"] == 0
    )
    heldin = v2.manifest["heldin"]
    assert (
        heldin["passed"] and heldin["against"] == "m@1" and heldin["n"] == min(32, len(_new_questions(ws, v2.manifest)))
    )
    assert heldin["module"]["f1"] >= heldin["parent"]["f1"] + 0.05

    own = read_records(ws.data_dir(v2.manifest["datasets"][0]))
    copied = next(r for r in read_records(ws.data_dir(v1.manifest["datasets"][0])) if r.kind == "qa")
    assert not any(copied.question.lower() in (r.question + r.text).lower() for r in own)  # not in m@2's own data
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text(json.dumps({"id": "copy", "question": copied.question, "answers": [copied.answer]}) + "\n")
    capsys.readouterr()
    assert main(["eval", str(leaked), "--module", "m@2", "--systems", "module", "--retention-samples", "2"]) == 1
    err = capsys.readouterr().err
    assert "leaked into the training data" in err and "copy" in err and v1.manifest["datasets"][0] in err
