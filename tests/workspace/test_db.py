"""The SQLite workspace: versions, no-op re-adds, tombstones, corpus_version, registries and migrations."""

import sqlite3

import pytest

from imprint.errors import ImprintError, NotFoundError
from imprint.workspace import Workspace, default_root, doc_id_for
from imprint.workspace.migrations import MIGRATIONS


def words(text):
    return len(text.split())


def put(ws, uri, text, title="T"):
    chunks = [(part, words(part)) for part in text.split("\n\n")]
    return ws.put_document(uri, title, text, chunks)


@pytest.fixture
def ws(tmp_path):
    with Workspace.open(tmp_path / "ws") as workspace:
        yield workspace


def test_open_creates_a_wal_database_and_records_migrations(tmp_path):
    root = tmp_path / "nested" / "ws"
    ws = Workspace.open(root)
    assert (root / "imprint.db").is_file()
    assert ws.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ws.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    names = [r[0] for r in ws.db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [fn.__name__ for fn in MIGRATIONS]
    assert names[0] == "m001_initial"


def test_reopening_runs_no_migration_twice_and_keeps_data(tmp_path):
    ws = Workspace.open(tmp_path)
    put(ws, "/a.txt", "Alpha text.")
    ws.close()
    again = Workspace.open(tmp_path)
    assert again.db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)
    assert [d.uri for d in again.documents()] == ["/a.txt"]


def test_a_database_from_a_newer_imprint_is_refused(tmp_path):
    Workspace.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "imprint.db")
    db.execute("INSERT INTO _migrations VALUES ('m999_future', 'now')")
    db.commit()
    db.close()
    with pytest.raises(ImprintError, match="newer imprint"):
        Workspace.open(tmp_path)


def test_a_workspace_that_cannot_be_created_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ImprintError, match=r"cannot create workspace .*file/ws: .*; pick another --workspace"):
        Workspace.open(tmp_path / "file" / "ws")


def test_default_root_follows_imprint_home(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home"
    monkeypatch.delenv("IMPRINT_HOME")
    monkeypatch.chdir(tmp_path)
    assert default_root() == tmp_path / ".imprint"


def test_added_document_has_stable_ids(ws):
    doc, status = put(ws, "/docs/a.md", "First paragraph.\n\nSecond paragraph.")
    assert status == "added"
    assert doc.id == doc_id_for("/docs/a.md") and doc.id.startswith("d") and len(doc.id) == 11
    assert (doc.version, doc.status, doc.title) == (1, "active", "T")
    assert [c.id for c in ws.chunks()] == [f"{doc.id}:v1:0", f"{doc.id}:v1:1"]
    assert [(c.ord, c.text, c.n_tokens) for c in ws.chunks()] == [
        (0, "First paragraph.", 2),
        (1, "Second paragraph.", 2),
    ]
    assert ws.get_document(doc.id) == ws.get_document("/docs/a.md") == doc


def test_changed_text_makes_a_new_version_and_keeps_history(ws):
    first, _ = put(ws, "/a.md", "Old text.\n\nOld tail.")
    second, status = put(ws, "/a.md", "New text.")
    assert status == "updated"
    assert (second.id, second.version) == (first.id, 2)
    assert [c.text for c in ws.chunks()] == ["New text."]
    assert [c.id for c in ws.chunks()] == [f"{first.id}:v2:0"]
    assert [c.text for c in ws.version_chunks(first.id, 1)] == ["Old text.", "Old tail."]
    assert [d.text for d in ws.history("/a.md")] == ["Old text.\n\nOld tail.", "New text."]
    assert ws.get_document("/a.md", version=1).text == "Old text.\n\nOld tail."
    assert len(ws.documents()) == 1


def test_unchanged_re_add_writes_nothing(ws):
    put(ws, "/a.md", "Same text.")
    counts, changes = ws.counts(), ws.db.total_changes
    doc, status = put(ws, "/a.md", "Same text.", title="Another title")
    assert status == "unchanged" and doc.version == 1
    assert ws.counts() == counts
    assert ws.db.total_changes == changes


def test_remove_is_a_tombstone_and_re_adding_restores(ws):
    doc, _ = put(ws, "/a.md", "Keep me.")
    put(ws, "/b.md", "Other doc.")
    removed = ws.remove_document("/a.md")
    assert removed.status == "deleted"
    assert [d.uri for d in ws.documents()] == ["/b.md"]
    assert {d.uri: d.status for d in ws.documents(include_deleted=True)} == {"/a.md": "deleted", "/b.md": "active"}
    assert [c.doc_id for c in ws.chunks()] == [doc_id_for("/b.md")]
    assert ws.version_chunks(doc.id, 1)  # history is kept
    assert ws.remove_document(doc.id).status == "deleted"  # removing twice is a no-op

    restored, status = put(ws, "/a.md", "Keep me.")
    assert (status, restored.version, restored.status) == ("restored", 1, "active")
    assert len(ws.chunks()) == 2

    ws.remove_document(doc.id)
    changed, status = put(ws, "/a.md", "Keep me, changed.")
    assert (status, changed.version) == ("restored", 2)
    assert [d.status for d in ws.history(doc.id)] == ["deleted", "active"]


def test_unknown_documents_are_not_found(ws):
    with pytest.raises(NotFoundError, match="no document"):
        ws.remove_document("/nope.md")
    with pytest.raises(NotFoundError):
        ws.get_document("d0000000000")
    doc, _ = put(ws, "/a.md", "Text.")
    with pytest.raises(NotFoundError, match="no version 7"):
        ws.get_document(doc.id, version=7)


def test_a_relative_path_finds_its_document(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = str((tmp_path / "notes.md").resolve())
    put(ws, uri, "Notes.")
    assert ws.get_document("notes.md").uri == uri


def test_corpus_version_changes_exactly_when_content_does(ws, tmp_path):
    empty = ws.corpus_version()
    put(ws, "/a.md", "One.")
    v1 = ws.corpus_version()
    assert v1 != empty and len(v1) == 12
    put(ws, "/a.md", "One.")
    assert ws.corpus_version() == v1
    assert Workspace.open(tmp_path / "ws").corpus_version() == v1
    put(ws, "/a.md", "Two.")
    v2 = ws.corpus_version()
    assert v2 != v1
    ws.remove_document("/a.md")
    assert ws.corpus_version() == empty
    put(ws, "/a.md", "Two.")
    assert ws.corpus_version() == v2


def test_chunks_filter_by_document_and_order(ws):
    a, _ = put(ws, "/b.md", "B one.\n\nB two.")
    b, _ = put(ws, "/a.md", "A one.\n\nA two.")
    assert [c.text for c in ws.chunks()] == ["A one.", "A two.", "B one.", "B two."]
    assert [c.text for c in ws.chunks([a.id])] == ["B one.", "B two."]
    assert ws.chunks([]) == []


def test_empty_documents_are_refused(ws):
    with pytest.raises(ImprintError, match="/a.md: no text to store"):
        ws.put_document("/a.md", "T", "  \n", [])
    with pytest.raises(ImprintError, match="/a.md: a document needs at least one chunk"):
        ws.put_document("/a.md", "T", "text", [])
    assert ws.counts()["documents"] == 0


def test_transaction_is_all_or_nothing(ws):
    with pytest.raises(RuntimeError):
        with ws.transaction():
            put(ws, "/a.md", "One.")
            put(ws, "/b.md", "Two.")
            raise RuntimeError("boom")
    assert ws.counts() == {"documents": 0, "chunks": 0, "datasets": 0, "modules": 0}

    with ws.transaction():
        put(ws, "/a.md", "One.")
        with pytest.raises(ImprintError):
            with ws.transaction():
                put(ws, "/b.md", "Two.")
                ws.put_document("/c.md", "T", "", [])
    assert [d.uri for d in ws.documents()] == ["/a.md"]  # only the failed inner block was undone


def test_dataset_registry(ws):
    assert ws.data_dir("qa") == ws.root / "data" / "qa"
    entry = ws.register_dataset("qa", str(ws.data_dir("qa")), 10, "abc", {"strategy": "rules"})
    assert (entry.name, entry.n_records, entry.corpus_version) == ("qa", 10, "abc")
    assert entry.manifest == {"strategy": "rules"}
    ws.register_dataset("raw", "/x", 3, "abc", {})
    ws.register_dataset("qa", "/y", 12, "def", {"v": 2})  # re-synthesised: replaces, becomes the latest
    assert [d.name for d in ws.datasets()] == ["raw", "qa"]
    assert ws.get_dataset("qa").n_records == 12
    with pytest.raises(NotFoundError, match="available: raw, qa"):
        ws.get_dataset("nope")


def test_module_registry_versions(ws):
    assert ws.next_module_version("hr") == 1
    with pytest.raises(NotFoundError, match="none yet"):
        ws.get_module("hr")
    for version in (1, 2):
        assert ws.next_module_version("hr") == version
        path = ws.module_dir("hr", version)
        assert path == ws.root / "modules" / "hr" / str(version)
        ws.register_module("hr", version, "lora", "tiny", str(path), "abc", {"metrics": {"loss": version}})
    ws.register_module("ops", 1, "prefix", "tiny", "/p", "abc", {})
    assert ws.get_module("hr").version == 2
    assert ws.get_module("hr", 1).manifest == {"metrics": {"loss": 1}}
    assert [(m.name, m.version) for m in ws.modules()] == [("hr", 1), ("hr", 2), ("ops", 1)]
    with pytest.raises(NotFoundError, match=r"hr@1, hr@2, ops@1"):
        ws.get_module("hr", 9)
    with pytest.raises(NotFoundError, match="'missing'"):
        ws.get_module("missing")
    with pytest.raises(ImprintError, match="already exists"):
        ws.register_module("hr", 2, "lora", "tiny", "/p", "abc", {})


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "a..b"])
def test_names_cannot_leave_the_workspace(ws, name):
    with pytest.raises(ImprintError, match="bad"):
        ws.data_dir(name)
    with pytest.raises(ImprintError, match="bad"):
        ws.module_dir(name, 1)
    with pytest.raises(ImprintError, match="bad module name"):
        ws.register_module(name, 1, "lora", "tiny", "/p", "abc", {})
