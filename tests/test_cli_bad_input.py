"""Bad input found while building collections: each is one line on stderr, exit 1, and nothing stored is lost."""

import gc
import os
import stat

import pytest

from imprint.cli import main
from imprint.workspace import Workspace

CORPUS = "# Team\n\nPriya Raman has served as chief financial officer since March 2019.\n"


@pytest.fixture
def ws_dir(cli_ws, tmp_path):
    (tmp_path / "team.md").write_text(CORPUS)
    assert main(["add", str(tmp_path / "team.md")]) == 0
    return cli_ws


def _one_line_error(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error: ") and "\n" not in err and "Traceback" not in err
    return err


def _snapshot(ws_dir):
    ws = Workspace.open(ws_dir)
    return [(d.id, d.version, d.sha256) for d in ws.documents()], ws.counts()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ask", ""], "the question is empty"),
        (["ask", "   "], "the question is empty"),
        (["ask", "Who is the CFO?", "-k", "0"], "-k must be at least 1"),
        (["ask", "Who is the CFO?", "-k", "-5"], "-k must be at least 1"),
        (["calibrate", "x.jsonl", "-k", "0"], "-k must be at least 1"),
        (["ask", "Who?", "--module", "m1@99999999999999999999999"], "no module m1@99999999999999999999999"),
        (["ask", "Who?", "--module", "m1@0"], "no module m1@0"),
        (["ask", "Who?", "--collection", "nobody"], "collection 'nobody' has none"),
    ],
)
def test_bad_questions_flags_and_versions(ws_dir, capsys, argv, message):
    before = Workspace.open(ws_dir).counts()
    assert message in _one_line_error(capsys, *argv)
    assert Workspace.open(ws_dir).counts() == before


def test_a_read_only_workspace_is_refused_untouched(ws_dir, tmp_path, capsys):
    (tmp_path / "more.md").write_text("The Lisbon office opened in 2021.\n")
    before = _snapshot(ws_dir)
    modes = {p: p.stat().st_mode for p in [ws_dir, *ws_dir.rglob("*")] if not p.name.endswith(("-wal", "-shm"))}
    for p in modes:
        p.chmod(stat.S_IMODE(modes[p]) & ~0o222)  # chmod -R a-w
    try:
        for argv in (["add", str(tmp_path / "more.md")], ["docs"], ["ask", "Who is the CFO?"]):
            assert "is read-only" in _one_line_error(capsys, *argv)
    finally:
        for p, mode in modes.items():
            os.chmod(p, stat.S_IMODE(mode))
    assert _snapshot(ws_dir) == before and len(before[0]) == 1


def test_a_junk_database_is_refused_and_kept(ws_dir, capsys):
    gc.collect()  # close the connections `main` left to the garbage collector before replacing the file
    junk = b"this is not a database, but it may be someone's file\n" * 200
    (ws_dir / "imprint.db").write_bytes(junk)
    for suffix in ("-wal", "-shm"):
        (ws_dir / f"imprint.db{suffix}").unlink(missing_ok=True)
    for argv in (["docs"], ["ask", "Who is the CFO?"]):
        assert "is not an imprint database" in _one_line_error(capsys, *argv)
    assert (ws_dir / "imprint.db").read_bytes() == junk


def _refused(capsys, *argv) -> str:
    """One line `imprint: error: ...` and a non-zero exit: 1 for a value out of range, 2 for one argparse cannot
    read as a number at all."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and err.startswith("imprint: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def with_module(ws_dir, tmp_path):
    """`m1@1` registered as trained on the current corpus (no weights: every command below must stop before
    loading any)."""
    ws = Workspace.open(ws_dir)
    documents = {d.id: d.version for d in ws.documents()}
    ws.register_module("m1", 1, "lora", "tiny", str(tmp_path / "m1"), ws.corpus_version("default"),
                       {"name": "m1", "version": 1, "documents": documents, "datasets": []})  # fmt: skip
    (tmp_path / "q.jsonl").write_text('{"question": "Who is the CFO?", "answers": ["Priya Raman"]}\n')
    return ws_dir


BAD_REFS = ["m1@²", "m1@①", "m1@١", "m1@-1", "m1@0", "m1@" + "9" * 400, "", "@@"]


@pytest.mark.parametrize("ref", BAD_REFS)
@pytest.mark.parametrize("verb", ["ask", "rollback", "update", "diff", "export", "eval"])
def test_every_bad_module_reference_is_one_line(with_module, tmp_path, capsys, verb, ref):
    q = str(tmp_path / "q.jsonl")
    argv = {
        "ask": ["ask", "Who?", "--module", ref],
        "rollback": ["rollback", ref],
        "update": ["update", ref],
        "diff": ["diff", "m1@1", ref, q],
        "export": ["export", ref, "--out", str(tmp_path / "out")],
        "eval": ["eval", q, "--module", ref],
    }[verb]
    before = _snapshot(with_module)
    err = _refused(capsys, *argv)
    assert "m1@1" not in err or "available" in err  # `@١` is never read as version 1
    if ref:
        assert "module" in err
    assert _snapshot(with_module) == before and Workspace.open(with_module).current_versions() == {"m1": 1}
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--port", "99999"], "--port must be in [1, 65535]"),
        (["serve", "--port", "0"], "--port must be in [1, 65535]"),
        (["serve", "--port", "٨٠٠٠"], "argument --port: '٨٠٠٠' is not a whole number"),
        (["serve", "--threads", "-1"], "--threads must be in [1, 4096]"),
        (["serve", "--threads", "0"], "--threads must be in [1, 4096]"),
        (["serve", "--max-loaded-mb", "nan"], "argument --max-loaded-mb: 'nan' is not a finite number"),
        (["serve", "--max-loaded-mb", "0"], "--max-loaded-mb must be above 0"),
        (["eval", "{q}", "--retain-limit", "-1"], "--retain-limit must be at least 1"),
        (["eval", "{q}", "--retention-samples", "-3"], "--retention-samples must be in [1, 100000]"),
        (["eval", "{q}", "--retention-samples", "0"], "--retention-samples must be in [1, 100000]"),
        (["eval", "{q}", "--lm-eval-limit", "0"], "--lm-eval-limit must be at least 1"),
        (["eval", "--generate-questions", "0"], "--generate-questions must be in [1, 100000]"),
        (["calibrate", "{q}", "--f1", "2"], "--f1 must be in (0, 1]"),
        (["calibrate", "{q}", "--f1", "0"], "--f1 must be in (0, 1]"),
        (["calibrate", "{q}", "--f1", "nan"], "argument --f1: 'nan' is not a finite number"),
        (["calibrate", "{q}", "--max-abstain", "-1"], "--max-abstain must be in [0, 1]"),
        (["calibrate", "{q}", "--max-abstain", "1.5"], "--max-abstain must be in [0, 1]"),
        (["calibrate", "{q}", "--max-abstain", "inf"], "argument --max-abstain: 'inf' is not a finite number"),
        (["ask", "Who?", "-k", "٣"], "argument -k: '٣' is not a whole number"),
        (["synth", "--show", "-1"], "--show must be at least 0"),
        (["calibrate", "{unanswerable}"], "none of the 2 questions has an answer"),
    ],
)
def test_numeric_flags_are_checked_before_anything_runs(with_module, tmp_path, capsys, argv, message):
    (tmp_path / "unanswerable.jsonl").write_text(
        '{"question": "What is the dental plan?", "answers": [], "answerable": false}\n'
        '{"question": "Who founded it?", "answers": [], "answerable": false}\n'
    )
    files = {"q": str(tmp_path / "q.jsonl"), "unanswerable": str(tmp_path / "unanswerable.jsonl")}
    before = _snapshot(with_module), sorted(p.name for p in with_module.iterdir())
    assert message in _refused(capsys, *(a.format(**files) for a in argv))
    assert (_snapshot(with_module), sorted(p.name for p in with_module.iterdir())) == before  # no calibration, report


@pytest.mark.parametrize(
    "argv, message",
    [
        (["learn", "{docs}", "--name", "n", "--set", "train.lr=nan"], "train.lr: 'nan' is not a finite number"),
        (["learn", "{docs}", "--name", "n", "--set", "train.lr=inf"], "train.lr: 'inf' is not a finite number"),
        (["learn", "{docs}", "--name", "n", "--set", "train.lr=-1"], "lr must be finite and positive"),
        (["learn", "{docs}", "--name", "n", "--set", "train.epochs=١"], "train.epochs: '١' is not a float"),
        (["learn", "{docs}", "--name", "n", "--set", "lora.r=٤"], "lora.r: '٤' is not a int"),
        (["learn", "{docs}", "--name", "n", "--set", "train.bogus=1"], "unknown setting train.bogus"),
        (["train", "--set", "train.lr=nan"], "train.lr: 'nan' is not a finite number"),
        (["train", "--set", "train.bogus=1"], "unknown setting train.bogus"),
        (["synth", "--set", "synth.bogus=1"], "unknown setting synth.bogus"),
        (["ask", "Who?", "--set", "retrieval.bogus=1"], "unknown setting retrieval.bogus"),
        (["calibrate", "{q}", "--set", "retrieval.bogus=1"], "unknown setting retrieval.bogus"),
        (["eval", "{q}", "--set", "train.lr=1"], "unknown config section 'train'"),
        (["eval", "{q}", "--set", "generator.bogus=1"], "unknown setting generator.bogus"),
        (["serve", "--set", "serve.bogus=1"], "unknown setting serve.bogus"),
        (["update", "m1", "--set", "train.bogus=1"], "unknown setting train.bogus"),  # was: "nothing changed"
        (["update", "m1", "--set", "train.lr=nan"], "train.lr: 'nan' is not a finite number"),
    ],
)
def test_settings_are_checked_before_any_work(with_module, tmp_path, capsys, argv, message):
    docs = tmp_path / "new-docs"
    docs.mkdir()
    (docs / "more.md").write_text("The Lisbon office opened in 2021.\n")
    files = {"q": str(tmp_path / "q.jsonl"), "docs": str(docs)}
    before = _snapshot(with_module), sorted(p.name for p in with_module.iterdir())
    assert message in _refused(capsys, *(a.format(**files) for a in argv))
    # nothing ingested, no dataset registered, no data, run or module folder made
    assert (_snapshot(with_module), sorted(p.name for p in with_module.iterdir())) == before
