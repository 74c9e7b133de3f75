"""Eval and calibrate on a workspace of two collections: each system reads one collection, the scorecard says
which, and nothing of the other collection (quote, document id, title, chunk id) reaches a scorecard, a
calibration or the prompts a question generator is sent.

`alpha` holds Alpha's vault and the module `alpha-notes` trained on it; the `default` collection holds another
corpus (House's launch code), the one every verb used to fall back to.
"""

import json
import sys
from pathlib import Path

import pytest

from imprint import pipeline
from imprint.cli import main
from imprint.workspace import Workspace

sys.path.insert(0, str(Path(__file__).parents[1] / "synth"))  # the OpenAI-compatible test server lives there
from synth_http_server import ServerState, create_app, running  # noqa: E402

ALPHA = "# Alpha vault\n\nThe Alpha vault PIN is 90210. Alpha keeps its spare keys in Springfield.\n"
HOUSE = "# House launch\n\nThe House secret launch code is BLUEFALCON-7731. House rockets fly from Cypress Creek.\n"
TRAIN = {"train": {"epochs": 1, "lr": 1e-2, "checkpoint_every": 0, "verify": False, "read": 0, "replay": 0},
         "lora": {"r": 4, "alpha": 8}}  # fmt: skip
QUESTIONS = [
    {"id": "pin", "question": "Which number opens the vault of Alpha?", "answers": ["90210"]},
    {"id": "keys", "question": "In which town are the spare keys of Alpha?", "answers": ["Springfield"]},
    {"id": "ceo", "question": "Who runs the Alpha cafeteria?", "answers": [], "answerable": False},
]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """(workspace dir, eval set, folder): `alpha` with `alpha-notes@1`, and `default` with House's document."""
    root = tmp_path_factory.mktemp("two-collections")
    for name, text in (("alpha", ALPHA), ("house", HOUSE)):
        (root / name).mkdir()
        (root / name / f"{name}.md").write_text(text)
    ws = Workspace.open(root / "ws")
    pipeline.add(ws, [str(root / "alpha")], model="tiny", collection="alpha")
    pipeline.add(ws, [str(root / "house")], model="tiny")  # the default collection
    dataset = pipeline.synth(ws, "rules", name="alpha-rules", collection="alpha")["name"]
    pipeline.train_module(ws, [dataset], "alpha-notes", "lora", model="tiny", overrides=TRAIN)
    ws.close()
    questions = root / "alpha-eval.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return root / "ws", questions, root


@pytest.fixture
def cli(two, tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_HOME", str(two[0]))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    return two


def _secrets(ws: Workspace, collection: str) -> set[str]:
    """What must not leave `collection`: its documents' ids, titles and sentences, and its chunks' ids."""
    found = {"BLUEFALCON" if collection == "default" else "90210"}
    for doc in ws.documents(collection=collection):
        sentences = [s.strip(" .#") for line in doc.text.splitlines() for s in line.split(". ")]
        found |= {doc.id, doc.title, *(s for s in sentences if len(s) > 12)}
    return found | {c.id for c in ws.chunks(collection=collection)}


def _last_card(ws_dir: Path) -> tuple[dict, str]:
    path = max((ws_dir / "reports").glob("eval-*/scorecard.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(path.read_text()), path.read_text()


def test_module_systems_read_their_collection_and_the_others_the_run_s(cli, capsys):
    ws_dir, questions, _ = cli
    ws = Workspace.open(ws_dir)
    alpha_docs = {d.id for d in ws.documents(collection="alpha")}
    # without --collection the module's collection is the run's: no system reads the default collection
    argv = ["eval", str(questions), "--module", "alpha-notes", "--systems", "rag,module+rag", "--allow-leakage",
            "--retention-samples", "2"]  # fmt: skip
    assert main(argv) == 0
    card, text = _last_card(ws_dir)
    assert card["collection"] == "alpha" and card["modules"]["alpha-notes@1"]["collection"] == "alpha"
    assert {s["system"]: s["collection"] for s in card["systems"]} == {"rag": "alpha", "alpha-notes@1+rag": "alpha"}
    evidence = {e["doc_id"] for s in card["systems"] for r in s["rows"] for e in r["evidence"]}
    assert evidence == alpha_docs  # every answer read alpha's passages, and only those
    assert "90210" in text and not [s for s in _secrets(ws, "default") if s in text]

    # --collection names what base, icl and rag read; a module's systems still read their module's
    argv[-2:] = ["--collection", "default", "--retention-samples", "2"]
    assert main(argv) == 0
    card, _ = _last_card(ws_dir)
    read = {s["system"]: (s["collection"], {e["doc_id"] for r in s["rows"] for e in r["evidence"]})
            for s in card["systems"]}  # fmt: skip
    assert read == {
        "rag": ("default", {d.id for d in ws.documents(collection="default")}),
        "alpha-notes@1+rag": ("alpha", alpha_docs),
    }


def test_modules_of_two_collections_need_collection(cli, capsys):
    ws_dir, questions, _ = cli
    ws = Workspace.open(ws_dir)
    ws.register_module("house", 1, "lora", "tiny", str(ws_dir / "nowhere"), ws.corpus_version("default"), {})
    reports = sorted((ws_dir / "reports").glob("*")) if (ws_dir / "reports").exists() else []
    capsys.readouterr()
    assert main(["eval", str(questions), "--module", "alpha-notes", "--module", "house"]) == 1
    err = capsys.readouterr().err.strip()
    assert "different collections (alpha-notes@1 (alpha), house@1 (default))" in err and "\n" not in err
    assert main(["eval", str(questions), "--collection", "nobody"]) == 1
    assert "collection 'nobody' has no documents" in capsys.readouterr().err
    assert (sorted((ws_dir / "reports").glob("*")) if (ws_dir / "reports").exists() else []) == reports


def test_calibration_is_fitted_stored_and_applied_per_collection(cli, capsys):
    ws_dir, questions, _ = cli
    ws = Workspace.open(ws_dir)
    root = ws_dir / "calibration"
    assert main(["calibrate", str(questions), "--mode", "rag", "--collection", "alpha"]) == 0
    assert main(["calibrate", str(questions), "--mode", "module+rag", "--module", "alpha-notes"]) == 0
    stored = sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))
    assert stored == ["alpha/module+rag:alpha-notes@1.json", "alpha/rag.json"]
    for path in root.rglob("*.json"):
        text = path.read_text()
        assert json.loads(text)["report"]["collection"] == "alpha"
        assert not [s for s in _secrets(ws, "default") if s in text]

    def calibrated(*argv) -> bool:
        capsys.readouterr()
        assert main(["ask", "What is the vault PIN?", *argv]) == 0
        return "uncalibrated" not in capsys.readouterr().out

    assert calibrated("--mode", "rag", "--collection", "alpha")
    assert calibrated("--module", "alpha-notes", "--mode", "module+rag")
    assert not calibrated("--mode", "rag")  # the default collection's answers: alpha's fit does not apply
    # a workspace-level file from before calibrations were per collection is the default collection's only
    (root / "alpha" / "rag.json").rename(root / "rag.json")
    assert calibrated("--mode", "rag") and not calibrated("--mode", "rag", "--collection", "alpha")


def test_generated_questions_come_from_the_run_s_collection_only(cli, capsys):
    ws_dir, _, _ = cli
    ws = Workspace.open(ws_dir)
    from imprint.models import load_base

    tiny = load_base("tiny")
    sent = {}
    for flags in (["--module", "alpha-notes"], ["--collection", "default"], []):
        state = ServerState()
        with running(create_app(tiny.model, tiny.tokenizer, state)) as url:
            args = ["eval", "--generate-questions", "3", "--base-url", url, "--generator-model", "tiny", *flags]
            code = main([*args, "--systems", "base", "--retention-samples", "2"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 0 or (err and err[-1].startswith("imprint: error: "))
        sent[" ".join(flags)] = "\n".join(r["prompt"] for r in state.requests)
    assert "Alpha vault PIN is 90210" in sent["--module alpha-notes"]
    assert not [s for s in _secrets(ws, "default") if s in sent["--module alpha-notes"]]
    assert "BLUEFALCON-7731" in sent["--collection default"]
    assert not [s for s in _secrets(ws, "alpha") if s in sent["--collection default"]]
    assert "Alpha" not in sent[""]  # no module, no --collection: the default collection, never alpha
