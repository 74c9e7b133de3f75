"""The command line as a user runs it: the whole path on `tiny`, and one-line errors that leave the workspace intact."""

import json
import re

import pytest

from imprint.cli import main
from imprint.evaluate.metrics import normalize
from imprint.workspace import Workspace

CORPUS = (
    "# Team\n\nPriya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year.\n"
)

NO_CHECK = ["--set", "train.verify=false"]  # these runs are too short to teach the tiny model anything


@pytest.fixture
def ws_dir(cli_ws):
    return cli_ws


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "team.md").write_text(CORPUS)
    return folder


def snapshot(ws_dir):
    ws = Workspace.open(ws_dir)
    return [(d.id, d.version, d.sha256) for d in ws.documents()], ws.counts()


def test_learn_then_ask_and_eval_on_tiny(ws_dir, corpus, tmp_path, capsys):
    assert main(["learn", str(corpus), "--name", "hb", "--set", "train.epochs=2", "--set", "lora.r=4", *NO_CHECK]) == 0
    out = capsys.readouterr().out
    assert "module hb@1" in out and "lora on tiny" in out
    assert re.search(r"trained on \d+ corpus records \+ \d+ open-book copies \(train.read\) \+ \d+ general", out)
    manifest = json.loads((ws_dir / "modules" / "hb" / "1" / "manifest.json").read_text())
    assert manifest["base_model"] == "tiny" and manifest["config"]["lora"]["r"] == 4
    assert manifest["metrics"]["steps"] > 0 and manifest["corpus_version"] == Workspace.open(ws_dir).corpus_version()

    assert main(["ask", "Who is the CFO?", "--module", "hb", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {
        "answer",
        "confidence",
        "evidence",
        "mode",
        "module",
        "abstained",
        "supported",
        "latency_ms",
        "prompt_tokens",
        "conflict",
        "overridden",
    }
    assert answer["conflict"] is None  # only module+rag checks its module against the passages
    assert answer["evidence"] and answer["evidence"][0]["chunk_id"] and answer["mode"] == "module"
    # two epochs teach the tiny model nothing: its answer has no word of the evidence, which does not support it
    evidence_words = set(normalize(answer["evidence"][0]["quote"]).split())
    assert answer["module"] == "hb@1" and not set(normalize(answer["answer"]).split()) & evidence_words
    assert answer["supported"] is False

    questions = tmp_path / "eval.jsonl"
    questions.write_text(json.dumps({"question": "Who is the CFO?", "answers": ["Priya Raman"]}) + "\n")
    assert main(["eval", str(questions), "--module", "hb", "--systems", "base,module", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"base", "hb@1"} and all(s["n"] == 1 for s in scores.values())
    assert all((s["exact_match"], s["token_f1"]) == (0.0, 0.0) for s in scores.values())  # no gold word written
    row = json.loads(max((ws_dir / "reports").glob("*/scorecard.json")).read_text())["systems"][1]["rows"][0]
    assert (row["answer"], row["confidence"]) == (answer["answer"], answer["confidence"])  # eval answers as ask did

    # re-adding the same folder is a no-op; the module is retrained as version 2, here with self-replay
    assert (
        main(["learn", str(corpus), "--name", "hb", "--set", "train.epochs=1", "--set", "train.replay=0.5", *NO_CHECK])
        == 0
    )
    assert "1 unchanged" in capsys.readouterr().out
    second = json.loads((ws_dir / "modules" / "hb" / "2" / "manifest.json").read_text())
    # replay is half of what trains: the corpus records and their open-book copies (train.read, on by default)
    assert second["n_reading_records"] > 0
    assert second["n_replay_records"] == second["n_records"] + second["n_reading_records"]


def _bad_inputs(tmp_path, corpus):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02\xff\xfe binary")
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \x00\x9c")
    return {
        "missing": ["add", str(tmp_path / "nope.md")],
        "empty": ["add", str(tmp_path / "empty.txt")],
        "binary": ["add", str(tmp_path / "binary.txt")],
        "unsupported": ["add", str(tmp_path / "sheet.xlsx")],
        "corrupt pdf": ["add", str(tmp_path / "broken.pdf")],
        "unknown model": ["add", str(tmp_path / "nope.md"), "--model", "no-such-model"],
        "unknown module": ["ask", "Who?", "--module", "ghost"],
        "bad module version": ["ask", "Who?", "--module", "ghost@latest"],
        "bad override": ["learn", str(corpus), "--set", "train.lr=fast"],
        "missing replay corpus": [
            "learn",
            str(corpus),
            "--set",
            "train.replay=0.1",
            "--set",
            "train.replay_corpus=/no",
        ],
        "unknown setting": ["learn", str(corpus), "--set", "lora.rank=8"],
        "bad eval file": ["eval", str(tmp_path / "binary.txt")],
    }


@pytest.mark.parametrize("case", [
    "missing", "empty", "binary", "unsupported", "corrupt pdf", "unknown model", "unknown module",
    "bad module version", "bad override", "missing replay corpus", "unknown setting", "bad eval file",
])  # fmt: skip
def test_bad_input_is_one_line_error_and_workspace_survives(case, ws_dir, corpus, tmp_path, capsys):
    assert main(["add", str(corpus)]) == 0
    before = snapshot(ws_dir)
    capsys.readouterr()
    assert main(_bad_inputs(tmp_path, corpus)[case]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error: ") and "\n" not in err and "Traceback" not in err
    assert snapshot(ws_dir) == before


def test_unknown_flag_exits_nonzero(ws_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["add", "--no-such-flag", "x"])
    assert exc.value.code == 2


def test_a_local_hugging_face_directory_is_a_base_model(ws_dir, corpus, tmp_path, capsys):
    from imprint.testing import tiny_lm

    model, tokenizer = tiny_lm()
    model_dir = tmp_path / "my-model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    learn = ["learn", str(corpus), "--name", "local", "--model", str(model_dir), "--set", "train.epochs=1", *NO_CHECK]
    assert main(learn) == 0
    manifest = json.loads((ws_dir / "modules" / "local" / "1" / "manifest.json").read_text())
    assert manifest["base_model"] == str(model_dir.resolve())
    capsys.readouterr()
    assert main(["ask", "Who is the CFO?", "--module", "local", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["module"] == "local@1"
    (tmp_path / "not-a-model").mkdir()
    assert main(["ask", "Who?", "--model", str(tmp_path / "not-a-model")]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_remove_tombstones_documents_all_or_nothing(ws_dir, corpus, capsys):
    other = corpus / "other.md"
    other.write_text("The office is in Galway.")
    assert main(["add", str(corpus)]) == 0
    ws = Workspace.open(ws_dir)
    before = ws.corpus_version()
    assert main(["remove", str(other), "no-such-doc"]) == 1
    assert len(Workspace.open(ws_dir).documents()) == 2  # the unknown id removed nothing
    other.unlink()  # the usual order: the file is deleted, then forgotten
    assert main(["remove", str(other)]) == 0
    ws = Workspace.open(ws_dir)
    assert [d.uri for d in ws.documents()] == [str((corpus / "team.md").resolve())]
    assert ws.corpus_version() != before and all("Galway" not in c.text for c in ws.chunks())
    other.write_text("The office is in Galway.")
    assert main(["add", str(other)]) == 0 and "restored" in capsys.readouterr().out


def test_ask_modes_calibrate_and_retrieval_settings(ws_dir, corpus, tmp_path, capsys):
    assert main(["add", str(corpus)]) == 0
    capsys.readouterr()
    assert main(["ask", "How many days of annual leave?", "--mode", "rag", "--json", "-k", "1"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["mode"] == "rag" and len(answer["evidence"]) == 1 and answer["prompt_tokens"] > len(CORPUS) // 2
    assert answer["evidence"][0]["quote"] in CORPUS
    assert main(["ask", "Who is the CFO?", "--mode", "icl", "--set", "retrieval.store=qdrant"]) == 0
    assert "prompt tokens" in capsys.readouterr().out
    assert (ws_dir / "index" / "qdrant").is_dir() and (ws_dir / "index" / "vectors.sqlite").is_file()

    assert main(["ask", "Who?", "--mode", "module+rag"]) == 1
    assert "needs a module" in capsys.readouterr().err
    assert main(["ask", "Who?", "--set", "retrieval.store=faiss"]) == 1
    assert "retrieval.store must be sqlite-vec or qdrant" in capsys.readouterr().err
    assert main(["ask", "Who?", "--set", "train.lr=1"]) == 1
    assert "unknown config section 'train'" in capsys.readouterr().err

    questions = tmp_path / "cal.jsonl"
    rows = [{"question": f"Who is the CFO, case {i}?", "answers": ["Priya Raman"]} for i in range(6)]
    rows += [{"question": f"What is the dental plan {i}?", "answers": [], "answerable": False} for i in range(4)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["calibrate", str(questions), "--mode", "rag", "--mode", "base"]) == 0
    out = capsys.readouterr().out
    assert "rag" in out and "base" in out and "ECE" in out
    saved = json.loads((ws_dir / "calibration" / "default" / "rag.json").read_text())  # per collection
    assert saved["report"]["n"] == 10 and saved["report"]["n_unanswerable"] == 4
    # ask now uses the fitted calibration: no "uncalibrated" note
    assert main(["ask", "Who is the CFO?", "--mode", "rag"]) == 0
    assert "uncalibrated" not in capsys.readouterr().out
