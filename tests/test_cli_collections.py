"""Collections from the command line: documents, versions, removal, training and answers kept per collection."""

import json

import pytest

from imprint.cli import main
from imprint.synth.records import read_records
from imprint.workspace import Workspace

ACME = "# Vault\n\nThe Acme vault PIN is 90210. Spare keys are kept in Springfield.\n"
GLOBEX = "# Launch\n\nThe Globex launch code is BLUEFALCON-7731. Rockets fly from Cypress Creek.\n"
SHARED = "# Holidays\n\nEveryone gets 27 days of paid leave.\n"


@pytest.fixture
def ws_dir(cli_ws):
    return cli_ws


@pytest.fixture
def folders(tmp_path):
    out = {}
    for name, text in (("acme", ACME), ("globex", GLOBEX)):
        out[name] = tmp_path / name
        out[name].mkdir()
        (out[name] / f"{name}.md").write_text(text)
    (tmp_path / "shared.md").write_text(SHARED)
    out["shared"] = tmp_path / "shared.md"
    return out


def test_documents_versions_and_removal_are_per_collection(ws_dir, folders, capsys):
    for name in ("acme", "globex"):
        assert main(["add", str(folders[name]), str(folders["shared"]), "--collection", name]) == 0
    ws = Workspace.open(ws_dir)
    assert ws.collections() == {"acme": 2, "globex": 2}
    shared = {c: next(d for d in ws.documents(collection=c) if d.title == "Holidays") for c in ("acme", "globex")}
    assert shared["acme"].id != shared["globex"].id  # one file, two independent documents

    capsys.readouterr()
    assert main(["docs", "--collection", "acme"]) == 0
    listed = capsys.readouterr().out
    assert all(d.id in listed for d in ws.documents(collection="acme"))
    assert not any(d.id in listed for d in ws.documents(collection="globex"))
    assert main(["docs", "--collection", "initech"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error: collection 'initech' has no documents") and "\n" not in err

    globex_version = ws.corpus_version("globex")
    folders["shared"].write_text(SHARED + "The office closes on Fridays.\n")
    assert main(["add", str(folders["shared"]), "--collection", "acme"]) == 0
    assert main(["remove", str(folders["shared"]), "--collection", "globex"]) == 0
    ws = Workspace.open(ws_dir)
    assert ws.get_document(shared["acme"].id).version == 2 and ws.get_document(shared["globex"].id).version == 1
    assert ws.collections() == {"acme": 2, "globex": 1} and ws.corpus_version("globex") != globex_version
    assert all("Holidays" not in c.text for c in ws.chunks(collection="globex"))
    assert main(["remove", str(folders["acme"] / "acme.md"), "--collection", "globex"]) == 1  # not in globex
    assert Workspace.open(ws_dir).collections() == {"acme": 2, "globex": 1}


def test_learn_on_a_collection_trains_on_its_documents_only(ws_dir, folders, capsys):
    assert main(["add", str(folders["acme"]), "--collection", "acme"]) == 0
    learn = ["learn", str(folders["globex"]), "--collection", "globex", "--name", "gx"]
    assert main([*learn, "--set", "train.epochs=1", "--set", "lora.r=4", "--set", "train.verify=false"]) == 0
    ws = Workspace.open(ws_dir)
    manifest = json.loads((ws_dir / "modules" / "gx" / "1" / "manifest.json").read_text())
    assert manifest["collection"] == "globex" == ws.get_module("gx").collection
    assert manifest["corpus_version"] == ws.corpus_version("globex") != ws.corpus_version("acme")
    records = read_records(ws.data_dir(manifest["datasets"][0]))
    own = {c.id for c in ws.chunks(collection="globex")}
    assert records and {chunk for r in records for chunk in r.source_chunk_ids} <= own

    capsys.readouterr()
    assert main(["ask", "What is the launch code?", "--module", "gx", "--json"]) == 0  # retrieves from gx's collection
    evidence = json.loads(capsys.readouterr().out)["evidence"]
    assert evidence and {e["doc_id"] for e in evidence} <= {d.id for d in ws.documents(collection="globex")}
    assert main(["ask", "What is the vault PIN?", "--mode", "rag", "--collection", "acme", "--json"]) == 0
    assert "90210" in json.loads(capsys.readouterr().out)["evidence"][0]["quote"]
    assert main(["modules"]) == 0 and "globex" in capsys.readouterr().out
    assert main(["train", "--data", "gx-rules", "--data", "acme-x"]) == 1  # unknown dataset: one-line error
    assert main(["add", str(folders["acme"]), "--collection", "../up"]) == 1
    assert "bad collection name" in capsys.readouterr().err


QUICK = ["--strategy", "rules", "--set", "train.epochs=1", "--set", "lora.r=4", "--set", "train.verify=false",
         "--set", "train.read=0", "--set", "train.replay=0"]  # fmt: skip


def _state(ws_dir):
    """Everything a refused command must leave as it was: rows, current versions, and every stored file."""
    ws = Workspace.open(ws_dir)
    files = {str(p.relative_to(ws_dir)): p.read_bytes() for p in ws_dir.rglob("*") if p.is_file()
             and p.suffix not in (".db", ".db-wal", ".db-shm") and "index" not in p.parts}  # fmt: skip
    return ws.counts(), ws.current_versions(), sorted(d.id for d in ws.documents()), files


def test_a_name_of_another_collection_is_refused_and_nothing_changes(ws_dir, folders, capsys):
    from imprint.serve import BackgroundServer, create_app

    assert main(["learn", str(folders["acme"]), "--collection", "acme", "--name", "acme-notes", *QUICK]) == 0
    assert main(["add", str(folders["shared"]), "--collection", "globex"]) == 0
    assert main(["synth", "--collection", "globex", "--strategy", "rules", "--name", "globex-rules"]) == 0
    before = _state(ws_dir)
    hijacks = [
        ["learn", str(folders["globex"]), "--collection", "globex", "--name", "acme-notes", *QUICK],
        ["train", "--data", "globex-rules", "--name", "acme-notes", "--set", "train.epochs=1"],
        ["synth", "--collection", "globex", "--strategy", "rules", "--name", "acme-notes-rules"],  # acme's dataset
    ]
    for argv in hijacks:
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert "belongs to collection 'acme'" in err and "\n" not in err, err
        assert _state(ws_dir) == before  # globex's documents not ingested, acme's module and dataset untouched

    ws = Workspace.open(ws_dir)
    assert ws.get_module("acme-notes").collection == "acme" and ws.get_dataset("acme-notes-rules").collection == "acme"
    keys = ws_dir.parent / "keys.yaml"
    keys.write_text('tenants:\n  acme:\n    keys: ["sk-acme"]\n    collections: ["acme"]\n')
    with BackgroundServer(create_app(ws_dir, model="tiny", keys=keys)) as running:
        import httpx

        listed = httpx.get(f"{running.url}/models", headers={"Authorization": "Bearer sk-acme"}).json()["data"]
    assert {m["id"] for m in listed} == {"acme-notes", "acme-notes@1"}  # its own module, nothing else
