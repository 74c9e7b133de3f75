"""Living modules on `tiny`, as a user runs them: learn v1 -> change one document, add one, remove one -> update
to v2 from v1's weights -> lineage, rollback and back, diff of the answers; a removed document's chunks and records
are never used by a new version, and `--from-scratch` is the reference that starts from the base."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imprint.cli import main
from imprint.methods.loading import load_module
from imprint.synth.records import read_forget, read_records
from imprint.system import answer_questions
from imprint.workspace import Workspace

NO_CHECK = ["--set", "train.verify=false"]  # these runs are too short to teach the tiny model anything
DOCS = {
    "policy.md": "# Leave\n\nEmployees receive 27 days of paid annual leave per year. Leave is approved by managers.\n",
    "people.md": "# People\n\nPriya Raman has served as chief financial officer since March 2019.\n",
    "offices.md": "# Offices\n\nThe Lisbon office opened in 2021 and hosts 40 engineers.\n",
}
# only the records these tests reason about: no open-book copies (tests/train/test_reading.py covers those)
NO_READ = ["--set", "train.read=0"]
# an update that moves the tiny model's answers: small batches (several steps), no warm-up, a high rate
STRONG = [
    *NO_READ,
    "--set",
    "train.epochs=2",
    "--set",
    "train.lr=0.1",
    "--set",
    "train.batch_tokens=256",
    "--set",
    "train.warmup=0",
]
QUESTIONS = [
    "How many days of paid annual leave do employees receive?",
    "Who is the chief financial officer?",
    "When did the Lisbon office open?",
    "Where is the new support centre?",
]


@pytest.fixture
def story(cli_ws, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    learn = ["learn", str(folder), "--name", "hb", "--set", "train.epochs=2", "--set", "lora.r=4", *NO_READ]
    assert main([*learn, "--set", "train.lr=1e-2", *NO_CHECK]) == 0
    return cli_ws, folder


def _change_corpus(folder):
    """policy.md changes a fact, support.md is new, people.md is removed (file gone, then `imprint remove`)."""
    (folder / "policy.md").write_text(DOCS["policy.md"].replace("27 days", "30 days"))
    (folder / "support.md").write_text("# Support\n\nThe new support centre is in Porto and opened in May 2024.\n")
    assert main(["remove", str(folder / "people.md")]) == 0
    (folder / "people.md").unlink()
    assert main(["add", str(folder)]) == 0


def _lora_b(ws, version):
    tensors = load_file(str(Path(ws.get_module("hb", version).path) / "adapter_model.safetensors"))
    return {k: v for k, v in tensors.items() if "lora_B" in k}


def _answers(ws, spec):
    model, tokenizer, manifest = load_module(ws, spec)
    return [a.answer for a in answer_questions(model, tokenizer, QUESTIONS, "module", spec)]


def test_update_lineage_rollback_diff_and_removed_documents(story, tmp_path, capsys):
    ws_dir, folder = story
    ws = Workspace.open(ws_dir)
    v1 = ws.get_module("hb")
    removed_id = ws.get_document(str(folder / "people.md")).id
    old_policy = ws.get_document(str(folder / "policy.md"))
    _change_corpus(folder)
    capsys.readouterr()

    general = tmp_path / "general.txt"  # general replay from a file: the base model's own samples take minutes here
    general.write_text("Water boils at 100 degrees Celsius at sea level.\n\nThe moon orbits the Earth.\n")
    assert main(["update", "hb", *STRONG, "--set", f"train.replay_corpus={general}", *NO_CHECK]) == 0
    out = capsys.readouterr().out
    assert "update from hb@1: 1 added, 1 changed, 1 removed documents" in out and "module hb@2" in out
    v2 = ws.get_module("hb")
    info = v2.manifest["update"]
    corpus = f"its corpus records: {info['n_new_records']} new + {info['n_unchanged_records']} of unchanged documents"
    assert corpus in out and out.count(" general (train.replay)") == 1  # each count said once
    assert f"trained on {info['n_new_records'] + info['n_unchanged_records']} corpus records" in out
    assert v2.version == 2 and v2.parent_version == 1 and v2.manifest["parent"] == 1
    info = v2.manifest["update"]
    policy = ws.get_document(str(folder / "policy.md"))
    assert info["changed"] == [policy.id] and info["removed"] == [removed_id] and len(info["added"]) == 1
    assert policy.version == old_policy.version + 1
    assert v2.manifest["corpus_version"] == ws.corpus_version() != v1.corpus_version

    # v2 trains on current text only: no chunk of the removed document, none of policy.md's old version
    current = {c.id for c in ws.chunks()}
    (dataset,) = v2.manifest["datasets"]
    records = read_records(ws.data_dir(dataset))
    assert records and all(set(r.source_chunk_ids) <= current for r in records)
    sources = {c for r in records for c in r.source_chunk_ids}
    assert not any(c.startswith(removed_id) for c in sources)
    assert not any(c.startswith(f"{old_policy.id}:v{old_policy.version}:") for c in sources)
    assert removed_id not in v2.manifest["documents"] and v2.manifest["documents"][policy.id] == policy.version
    assert info["n_new_records"] > 0 and info["n_unchanged_records"] > 0  # offices.md is replayed
    assert info["n_fresh_chunks"] == 2  # policy.md's changed chunk and support.md's: offices.md's is not new
    trained = info["n_new_records"] + info["n_unchanged_records"] + info["n_forget_records"]
    assert info["share_of_retrain"] == round(trained / info["n_retrain_records"], 2)
    assert f"corpus records trained: {info['share_of_retrain']:.2f} of a from-scratch retrain's" in out
    assert v2.manifest["n_replay_records"] > 0 and v2.manifest["config"]["train"]["replay"] == 0.1  # update.general
    assert v1.manifest["documents"][removed_id] == 1  # v1 did learn it: the check above is not vacuous
    (change,) = [r for r in records if r.strategy == "change"]  # the changed fact, stated as a change
    assert (
        change.text.startswith("As of ") and "Employees receive 30 days of paid annual leave per year." in change.text
    )
    assert change.text.endswith("(previously: Employees receive 27 days of paid annual leave per year.)")
    assert change.source_chunk_ids == (f"{policy.id}:v{policy.version}:0",)
    # the forget set: only v1's records of the removed document and of policy.md's old version, kept apart
    forget = read_forget(ws.data_dir(dataset))
    assert forget and info["n_forget_records"] == v2.manifest["n_forget_records"] == len(forget)
    assert all(c.startswith((f"{removed_id}:", f"{old_policy.id}:v{old_policy.version}:"))
               for r in forget for c in r.source_chunk_ids)  # fmt: skip
    assert any("Priya Raman" in (r.answer or r.text) for r in forget)
    assert not any(r.kind == "qa" and "30 days" in r.answer for r in forget)  # the new text's answer is not unlearned

    # lineage: parent, corpus version, held-in column, current marker
    assert main(["modules"]) == 0 and "hb@2" in capsys.readouterr().out
    assert main(["modules", "--json"]) == 0
    rows = {r["module"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["hb@2"]["parent"] == "hb@1" and rows["hb@1"]["parent"] is None
    assert [rows["hb@1"]["current"], rows["hb@2"]["current"]] == [False, True]
    assert rows["hb@2"]["corpus_version"] == v2.corpus_version and rows["hb@2"]["datasets"] == ["hb-v2"]
    assert rows["hb@2"]["method"] == "lora" and "heldin_f1" in rows["hb@2"]  # None: verify was off here

    # rollback to v1 and back: a bare name follows the current version; v2 stays usable as hb@2
    assert main(["rollback", "hb@1"]) == 0 and "current version is now hb@1" in capsys.readouterr().out
    assert ws.get_module("hb").version == 1 and ws.current_versions() == {"hb": 1}
    assert main(["ask", "Who is the chief financial officer?", "--module", "hb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["module"] == "hb@1"
    assert main(["rollback", "hb@2"]) == 0 and ws.get_module("hb").version == 2

    # diff lists exactly the questions whose closed-book answers differ between the versions
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": q, "answers": ["x"]}) + "\n" for q in QUESTIONS))
    capsys.readouterr()
    assert main(["diff", "hb@1", "hb@2", str(questions), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    a, b = _answers(ws, "hb@1"), _answers(ws, "hb@2")
    expected = [{"question": q, "a": x, "b": y} for q, x, y in zip(QUESTIONS, a, b, strict=True) if x != y]
    assert found == {"a": "hb@1", "b": "hb@2", "n": len(QUESTIONS), "changed": expected} and expected
    assert main(["diff", "hb@2", "hb", str(questions), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == []  # the current version is hb@2 itself

    # nothing changed since hb@2: one line, nothing written
    before = ws.counts()
    assert main(["update", "hb", *NO_CHECK]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error: nothing changed") and "\n" not in err and ws.counts() == before


def test_an_update_starts_from_the_parent_weights_and_from_scratch_from_the_base(story, capsys):
    """With a learning rate too small to move anything, an update's adapter is its parent's, and a from-scratch
    retrain's is a fresh one (LoRA B starts at zero): so the update did start from the parent."""
    ws_dir, folder = story
    ws = Workspace.open(ws_dir)
    _change_corpus(folder)
    still = ["--set", "train.epochs=1", "--set", "train.lr=1e-12", "--set", "update.general=0", *NO_CHECK]
    assert main(["update", "hb@1", *still]) == 0
    assert main(["update", "hb@1", "--from-scratch", *still]) == 0
    v1, v2, v3 = (_lora_b(ws, n) for n in (1, 2, 3))
    assert any(t.abs().max() > 1e-3 for t in v1.values())  # v1 learned something
    assert all(torch.allclose(v2[k], v1[k], atol=1e-6) for k in v1)
    assert all(t.abs().max() < 1e-6 for t in v3.values())
    scratch = ws.get_module("hb", 3)
    assert scratch.parent_version is None and scratch.manifest["update"]["mode"] == "from-scratch"
    # an update warms up (update.warmup) from weights that already know things; a retrain keeps train.warmup
    assert ws.get_module("hb", 2).manifest["config"]["train"]["warmup"] == 0.2
    assert scratch.manifest["config"]["train"]["warmup"] == 0.05
    assert scratch.manifest["config"]["lora"]["r"] == 4  # the settings of the version it replaces
    records = read_records(ws.data_dir(scratch.manifest["datasets"][0]))
    # an update's cost is read against the records --from-scratch trains on: every current record
    assert ws.get_module("hb", 2).manifest["update"]["n_retrain_records"] == len(records)
    assert {c for r in records for c in r.source_chunk_ids} == {c.id for c in ws.chunks()}  # the whole corpus


BAD = [
    (["rollback", "hb"], "rollback needs a version"),
    (["rollback", "hb@7"], "no module 'hb@7'"),
    (["rollback", "ghost@1"], "no module 'ghost@1'"),
    (["update", "ghost"], "no module 'ghost'"),
    (["update", "hb", "--set", "lora.r=8"], "keeps its lora settings"),
    (["update", "hb", "--set", "update.general=2"], "invalid update settings"),
    (["update", "hb", "--set", "serve.port=1"], "unknown config section 'serve'"),
    (["diff", "hb@1", "ghost", "q.jsonl"], "no module 'ghost'"),
    (["diff", "hb@1", "hb@1", "missing.jsonl"], "does not exist"),
]


def test_bad_lineage_input_is_one_line_and_changes_nothing(story, tmp_path, capsys):
    ws_dir, folder = story
    _change_corpus(folder)
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "Who?", "answers": ["x"]}) + "\n")
    ws = Workspace.open(ws_dir)
    before = (ws.counts(), ws.current_versions())
    for argv, message in BAD:
        capsys.readouterr()
        assert main([str(tmp_path / a) if a.endswith(".jsonl") else a for a in argv]) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("imprint: error: ") and message in err and "\n" not in err, (argv, err)
        assert (ws.counts(), ws.current_versions()) == before


def test_a_change_set_scores_each_version_and_no_new_version_uses_removed_text(story, tmp_path, capsys):
    """The whole story: update and from-scratch v2 of the same v1, then `imprint eval` on a change set prints the
    adopted / retired / retained table and the update's cost against the retrain; neither new version trained on
    a chunk of the removed document or of the changed document's old version."""
    from imprint.evaluate.metrics import answer_contained, mean

    ws_dir, folder = story
    ws = Workspace.open(ws_dir)
    removed_id = ws.get_document(str(folder / "people.md")).id
    old_policy = ws.get_document(str(folder / "policy.md"))
    _change_corpus(folder)
    general = tmp_path / "general.txt"
    general.write_text("Water boils at 100 degrees Celsius at sea level.\n\nThe moon orbits the Earth.\n")
    run = ["--set", "train.epochs=1", "--set", f"train.replay_corpus={general}", *NO_CHECK]
    assert main(["update", "hb@1", *run]) == 0 and main(["update", "hb@1", "--from-scratch", *run]) == 0
    stale = (f"{removed_id}:", f"{old_policy.id}:v{old_policy.version}:")
    for version in (2, 3):
        manifest = ws.get_module("hb", version).manifest
        sources = {c for d in manifest["datasets"] for r in read_records(ws.data_dir(d)) for c in r.source_chunk_ids}
        assert sources and not any(c.startswith(stale) for c in sources), version
        assert removed_id not in manifest["documents"]

    changes = tmp_path / "changes.jsonl"
    rows = [
        {"id": "c1", "question": "What is the yearly leave allowance?", "answers": ["30 days"], "change": "changed",
         "old_answers": ["27 days"]},
        {"id": "a1", "question": "In which city is support based now?", "answers": ["Porto"], "change": "added"},
        {"id": "r1", "question": "Who runs the finances?", "answers": [], "answerable": False, "change": "removed",
         "old_answers": ["Priya Raman"]},
        {"id": "u1", "question": "How many engineers work in Lisbon?", "answers": ["40"], "change": "unchanged"},
    ]  # fmt: skip
    changes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    modules = ["--module", "hb@1", "--module", "hb@2", "--module", "hb@3"]
    assert main(["eval", str(changes), *modules, "--systems", "base,module", "--retention-samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "change set" in out and "update hb@2 vs from scratch hb@3" in out
    (card_path,) = (ws_dir / "reports").glob("eval-*/scorecard.json")
    card = json.loads(card_path.read_text())
    systems = card["changes"]["systems"]
    assert card["changes"]["n"] == {"added": 1, "changed": 1, "removed": 1, "unchanged": 1}
    assert systems["hb@2"]["kind"] == "update" and systems["hb@3"]["kind"] == "from-scratch"
    assert systems["hb@2"]["reference"] == systems["hb@3"]["reference"] == "hb@1"
    assert "reference" not in systems["hb@1"] and "reference" not in systems["base"]
    (cost,) = card["changes"]["cost"]
    update, scratch = ws.get_module("hb", 2).manifest["metrics"], ws.get_module("hb", 3).manifest["metrics"]
    assert cost["tokens_ratio"] == round(update["tokens"] / scratch["tokens"], 3)  # here update.min_records > corpus
    for s in card["systems"]:  # each rate is what the answers say, recomputed from the rows
        answers = {r["id"]: r["answer"] for r in s["rows"]}
        adopted = mean([answer_contained(answers[i], g) for i, g in (("c1", ["30 days"]), ("a1", ["Porto"]))])
        retired = mean([1 - answer_contained(answers[i], g) for i, g in (("c1", ["27 days"]), ("r1", ["Priya Raman"]))])
        assert systems[s["system"]]["adopted"] == adopted and systems[s["system"]]["retired"] == retired
        assert systems[s["system"]]["retained"] == answer_contained(answers["u1"], ["40"])


def _answer_logprobs(model, tokenizer, records) -> list[torch.Tensor]:
    """Per question-answer record, the model's next-token log-probabilities at the answer's positions."""
    from imprint.train.data import IGNORE, encode_record

    out = []
    with torch.no_grad():
        for record in records:
            example = encode_record(record, tokenizer, 256)
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1].float()
            out.append(torch.log_softmax(logits[torch.tensor(example.labels[1:]) != IGNORE], -1))
    return out


def _kl(p: list[torch.Tensor], q: list[torch.Tensor]) -> float:
    """Mean KL(p || q) per position."""
    total = sum(float((a.exp() * (a - b)).sum()) for a, b in zip(p, q, strict=True))
    return total / sum(a.shape[0] for a in p)


def test_an_update_unlearns_what_the_corpus_no_longer_says(story, tmp_path):
    """The removed document's answers: v1 learned them; the update with its forget set (v2) brings them back towards
    the base model's level, further than the same update without it (v3, update.forget=false)."""
    from imprint.models import load_base
    from imprint.train.data import IGNORE, encode_record

    ws_dir, folder = story
    ws = Workspace.open(ws_dir)
    removed_id = ws.get_document(str(folder / "people.md")).id
    _change_corpus(folder)
    general = tmp_path / "general.txt"
    general.write_text("Water boils at 100 degrees Celsius at sea level.\n\nThe moon orbits the Earth.\n")
    run = ["update", "hb@1", *STRONG, "--set", f"train.replay_corpus={general}", *NO_CHECK]
    assert main(run) == 0 and main([*run, "--set", "update.forget=false"]) == 0
    v2, v3 = ws.get_module("hb", 2).manifest, ws.get_module("hb", 3).manifest
    assert v2["n_forget_records"] > 0 and v3["n_forget_records"] == 0 and v3["update"]["config"]["forget"] is False
    gone = [r for r in read_forget(ws.data_dir(v2["datasets"][0])) if r.kind == "qa"]
    assert gone and all(c.startswith(f"{removed_id}:") or "27" in r.answer for r in gone for c in r.source_chunk_ids)
    base = load_base("tiny")
    reference = _answer_logprobs(base.model, base.tokenizer, gone)
    kl, nll = {}, {}
    for version in (1, 2, 3):
        model, tokenizer, _ = load_module(ws, f"hb@{version}")
        logprobs = _answer_logprobs(model, tokenizer, gone)
        kl[version] = _kl(reference, logprobs)
        labels = [encode_record(r, tokenizer, 256).labels[1:] for r in gone]
        picked = [
            lp[torch.arange(lp.shape[0]), torch.tensor([t for t in ls if t != IGNORE])]
            for lp, ls in zip(logprobs, labels, strict=True)
        ]
        nll[version] = -float(torch.cat(picked).mean())
    assert kl[2] < 0.75 * kl[3], kl  # the forget set pulled those answers towards the base (measured 0.23 vs 0.36)
    assert nll[2] > nll[3], nll  # and away from the removed text
