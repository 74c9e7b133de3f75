"""Module lineage in the workspace: each version's parent, the current version a bare name resolves to (newest
unless rolled back), and workspaces from before lineage migrating with their newest version current."""

import sqlite3

import pytest

from imprint.errors import NotFoundError
from imprint.workspace import Workspace, trained_documents
from imprint.workspace.migrations import MIGRATIONS


def register(ws, name, version, parent=None):
    return ws.register_module(name, version, "lora", "tiny", f"/p/{version}", "cv", {"v": version}, "default", parent)


def test_the_newest_version_is_current_until_a_rollback_and_a_new_version_is_current_again(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    register(ws, "hb", 1)
    register(ws, "hb", 2, parent=1)
    register(ws, "ops", 1)
    assert ws.current_versions() == {"hb": 2, "ops": 1} and ws.get_module("hb").version == 2
    assert ws.get_module("hb", 2).parent_version == 1 and ws.get_module("hb", 1).parent_version is None

    assert ws.set_current_module("hb", 1).version == 1
    assert ws.get_module("hb").version == 1 and ws.get_module("hb").manifest == {"v": 1}
    assert ws.current_versions() == {"hb": 1, "ops": 1}
    assert ws.get_module("hb", 2).version == 2  # the newer version stays usable by its number

    register(ws, "hb", 3, parent=1)  # training after a rollback: the new version is the current one
    assert ws.get_module("hb").version == 3 and ws.current_versions()["hb"] == 3


def test_a_module_spec_names_the_current_version_or_an_exact_one(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    register(ws, "hb", 1)
    register(ws, "hb", 2, parent=1)
    ws.set_current_module("hb", 1)
    assert ws.module("hb").version == 1 and ws.module("hb@2").version == 2 and ws.module("hb@1").version == 1
    for spec in ("hb@two", "hb@-1"):
        with pytest.raises(NotFoundError, match=f"bad module version in '{spec}'"):
            ws.module(spec)


def test_rolling_back_to_a_version_that_does_not_exist_changes_nothing(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    register(ws, "hb", 1)
    register(ws, "hb", 2, parent=1)
    for name, version in (("hb", 5), ("ghost", 1)):
        with pytest.raises(NotFoundError, match=f"no module '{name}@{version}'"):
            ws.set_current_module(name, version)
    assert ws.current_versions() == {"hb": 2}


def test_a_workspace_from_before_lineage_keeps_its_newest_version_current(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    db = sqlite3.connect(root / "imprint.db", isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for fn in MIGRATIONS[:3]:  # m001..m003: the schema before lineage
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, 'then')", (fn.__name__,))
    for version in (1, 2):
        db.execute(
            "INSERT INTO modules VALUES ('m', ?, 'lora', 'tiny', '/p', 'cv', '{}', 'then', 'default')", (version,)
        )
    db.close()
    ws = Workspace.open(root)
    assert ws.get_module("m").version == 2 and ws.get_module("m", 1).parent_version is None
    assert ws.current_versions() == {"m": 2}
    ws.set_current_module("m", 1)
    assert Workspace.open(root).get_module("m").version == 1  # the pointer is stored, not kept in memory


def test_trained_documents_reads_document_versions_from_chunk_ids():
    assert trained_documents(["d1:v2:0", "d1:v2:1", "d0:v1:3"]) == {"d0": 1, "d1": 2}
    assert trained_documents([]) == {}
