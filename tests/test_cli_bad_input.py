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
