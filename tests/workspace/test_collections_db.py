"""Collections in the workspace database: independent documents, versions and corpus versions per collection,
and a workspace made before collections opens with everything in `default`, ids and versions unchanged."""

import hashlib
import sqlite3

import pytest

from imprint.errors import ImprintError, NotFoundError
from imprint.retrieval import MergedRetriever, Retriever
from imprint.workspace import Workspace, doc_id_for
from imprint.workspace.migrations import MIGRATIONS


def put(ws, uri, text, collection="default"):
    return ws.put_document(uri, "T", text, [(text, len(text.split()))], collection=collection)


def test_collections_are_independent_corpora(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    a, _ = put(ws, "/d/x.md", "alpha text", "a")
    b, _ = put(ws, "/d/x.md", "alpha text", "b")
    assert a.id != b.id and a.id == doc_id_for("/d/x.md", "a") and (a.collection, b.collection) == ("a", "b")
    only_b = ws.corpus_version("b")
    assert put(ws, "/d/x.md", "alpha text, changed", "a")[1] == "updated"
    assert ws.get_document(a.id).version == 2 and ws.get_document(b.id).version == 1
    assert ws.corpus_version("b") == only_b and ws.corpus_version("a") != only_b
    ws.remove_document("/d/x.md", "b")
    assert ws.collections() == {"a": 1, "b": 0} and not ws.has_collection("b") and ws.has_collection("a")
    assert [c.text for c in ws.chunks(collection="a")] == ["alpha text, changed"] and not ws.chunks(collection="b")
    with pytest.raises(NotFoundError, match="no document .* in collection 'b' of "):
        ws.remove_document(a.id, "b")  # an id of another collection is not found there
    with pytest.raises(ImprintError, match="bad collection name"):
        put(ws, "/d/y.md", "text", "../escape")


def test_history_reads_the_versions_of_the_named_collection(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    put(ws, "/d/x.md", "first", "a")
    put(ws, "/d/x.md", "second", "a")
    put(ws, "/d/x.md", "elsewhere", "b")
    assert [d.text for d in ws.history("/d/x.md", "a")] == ["first", "second"]
    assert [d.text for d in ws.history("/d/x.md", "b")] == ["elsewhere"]
    with pytest.raises(NotFoundError, match="no document '/d/x.md' in "):
        ws.history("/d/x.md")  # a uri is looked up in `default`, which does not have it


def test_ids_are_those_every_earlier_workspace_stored():
    """Document ids are stored in chunk ids, datasets and manifests: the default collection's must stay what
    workspaces made before collections computed (sha1 of the uri), other collections' include their name."""
    assert doc_id_for("/d/x.md") == "d" + hashlib.sha1(b"/d/x.md").hexdigest()[:10]
    assert doc_id_for("/d/x.md", "default") == doc_id_for("/d/x.md")
    assert doc_id_for("/d/x.md", "a") == "d" + hashlib.sha1(b"a\0/d/x.md").hexdigest()[:10]


def test_a_default_only_workspace_keeps_its_corpus_version(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    put(ws, "/d/x.md", "one")
    put(ws, "/d/y.md", "two")
    assert ws.corpus_version() == ws.corpus_version("default") and ws.collections() == {"default": 2}


def test_a_workspace_from_before_collections_migrates_into_default(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    db = sqlite3.connect(root / "imprint.db", isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for fn in MIGRATIONS[:2]:  # m001, m002: the schema before collections
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, 'then')", (fn.__name__,))
    doc = doc_id_for("/d/x.md")
    db.execute("INSERT INTO documents VALUES (?, 1, '/d/x.md', 'sha', 'T', 'old text', 'active', 'then')", (doc,))
    db.execute("INSERT INTO chunks VALUES (?, ?, 1, 0, 'old text', 2)", (f"{doc}:v1:0", doc))
    db.execute("INSERT INTO modules VALUES ('m', 1, 'lora', 'tiny', '/p', 'cv', '{}', 'then')")
    db.close()
    ws = Workspace.open(root)
    (found,) = ws.documents(collection="default")
    assert found.id == doc and found.collection == "default" and ws.get_module("m").collection == "default"
    assert put(ws, "/d/x.md", "old text")[1] == "updated"  # same id, next version
    with pytest.raises(NotFoundError, match="m@99999999999999999999999"):
        ws.get_module("m", 99999999999999999999999)  # beyond SQLite's integers: not found, not OverflowError


def test_each_collection_has_its_own_index(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    put(ws, "/d/vault.md", "The Acme vault PIN is 90210.", "acme")
    put(ws, "/d/launch.md", "The Globex launch code is BLUEFALCON-7731.", "globex")
    put(ws, "/d/leave.md", "Employees receive 27 days of paid annual leave.")
    acme = Retriever.open(ws, collection="acme")
    globex = Retriever.open(ws, collection="globex")
    default = Retriever.open(ws)
    assert {h.text for h in acme.search("launch code PIN leave", k=20)} == {"The Acme vault PIN is 90210."}
    assert [h.doc_id for h in globex.search("vault PIN", k=20)] == [doc_id_for("/d/launch.md", "globex")]
    assert len(default) == 1 and (tmp_path / "ws" / "index" / "vectors.sqlite").is_file()
    small = tmp_path / "ws" / "index" / "collections" / "acme" / "vectors.sqlite"
    assert small.stat().st_size < 400_000  # sqlite-vec's default blocks would take 1.5 MB for this one vector
    both = MergedRetriever([acme, globex]).search("What is the launch code?", k=2)
    assert len(both) == 2 and both[0].text.startswith("The Globex launch code")
