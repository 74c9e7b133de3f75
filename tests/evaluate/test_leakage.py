"""Leakage: eval questions found verbatim, lightly reworded, or paired with their answer sentence in training data."""

import pytest

from imprint.evaluate.evalset import EvalItem
from imprint.evaluate.leakage import find_leaks, leakage_report, ngram_containment
from imprint.synth.records import SynthRecord


def qa(question: str, answer: str) -> SynthRecord:
    return SynthRecord.make("rules", ["c1"], "qa", question=question, answer=answer)


def text(body: str) -> SynthRecord:
    return SynthRecord.make("rules", ["c1"], "text", text=body)


def test_ngram_containment_by_hand():
    # normalised: "who has served as cfo since march 2019" -> 6 trigrams; the other shares the last 4
    assert ngram_containment("Who has served as the CFO since March 2019?", "Who served as CFO since March 2019?") == (
        pytest.approx(4 / 6)
    )
    assert ngram_containment("Who is CFO?", "who is cfo") == 1.0  # 3 words: one trigram, present
    assert ngram_containment("CFO?", "The CFO is Priya.") == 1.0  # one word: unigrams
    assert ngram_containment("", "anything") == 0.0


def test_each_kind_of_leak_is_found_and_a_paraphrase_is_not():
    items = [
        EvalItem("verbatim", "Who is the chief financial officer?", ("Priya Raman",)),
        EvalItem("near", "Since when has Priya Raman served as CFO here?", ("March 2019",)),
        EvalItem(
            "sentence",
            "What does the travel policy say about upgrades?",
            ("Upgrades to business class are never reimbursed",),
        ),
        EvalItem("clean", "Which executive is in charge of the company's finances?", ("Priya Raman",)),
    ]
    records = {
        "ds": [
            text("Everyone asks: who is the chief financial officer? It is Priya Raman."),
            qa("Since when has Priya Raman served as CFO?", "March 2019"),
            qa("What does the travel policy say about upgrades?", "Upgrades to business class are never reimbursed."),
            qa("Who has served as CFO since March 2019?", "Priya Raman"),
        ]
    }
    leaks = find_leaks(items, records)
    kinds = {(leak.item_id, leak.kind) for leak in leaks}
    assert ("verbatim", "question_verbatim") in kinds
    # "since when has priya raman served as cfo here": 6 of its 7 trigrams are in the training question
    assert ("near", "question_near_duplicate") in kinds
    assert ("sentence", "question_verbatim") in kinds  # the same question verbatim, with its answer sentence
    assert not any(item == "clean" for item, _ in kinds)
    near = next(x for x in leaks if x.item_id == "near")
    assert near.overlap == pytest.approx(6 / 7) and near.dataset == "ds"

    report = leakage_report(items, records)
    assert not report["ok"] and report["leaked_items"] == ["near", "sentence", "verbatim"]
    assert report["checked_items"] == 4 and report["checked_records"] == 4


def test_answer_sentence_next_to_a_reworded_question():
    item = EvalItem(
        "s", "What does the travel policy say on upgrades?", ("Upgrades to business class are never reimbursed",)
    )
    record = qa("What does the travel policy say about upgrades?", "Upgrades to business class are never reimbursed.")
    kinds = sorted(leak.kind for leak in find_leaks([item], {"ds": [record]}, threshold=0.5))
    assert kinds == ["answer_sentence", "question_near_duplicate"]


def test_short_answers_in_training_data_are_not_leaks():
    item = EvalItem("a", "How many days off does a full-time employee get?", ("27",))
    record = text("Employees receive 27 days of paid annual leave per year.")
    assert find_leaks([item], {"ds": [record]}) == []
    assert leakage_report([item], {"ds": [record]})["ok"]


def _version(ws, tmp_path, version, parent, records, replay_corpus=None) -> dict:
    """Register dataset `m-v<version>` holding `records` and module m@`version` trained on it from `parent`."""
    from imprint.synth.records import write_records

    name = f"m-v{version}"
    write_records(tmp_path / name, records, {"name": name})
    ws.register_dataset(name, str(tmp_path / name), len(records), "c1", {"name": name})
    train = {"replay": 0.1, "replay_corpus": str(replay_corpus)} if replay_corpus else {"replay": 0}
    manifest = {"name": "m", "version": version, "parent": parent, "datasets": [name], "config": {"train": train}}
    return ws.register_module(
        "m", version, "lora", "tiny", str(tmp_path), "c1", manifest, parent_version=parent
    ).manifest


def test_an_update_is_checked_against_every_dataset_of_its_lineage(tmp_path):
    """m@3 descends from m@2, from m@1 (each an update keeping its parent's weights); m@4 was retrained from the base.
    A question copied from m@1's data or from m@1's replay corpus is a leak of m@3, not of m@4."""
    from imprint.evaluate.leakage import training_records
    from imprint.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    general = tmp_path / "general.txt"
    general.write_text("Water boils at one hundred degrees Celsius at sea level.\n")
    first = qa("Who has served as chief financial officer since March 2019?", "Priya Raman")
    _version(ws, tmp_path, 1, None, [first], replay_corpus=general)
    _version(ws, tmp_path, 2, 1, [qa("When did the Lisbon office open?", "2021")])
    m3 = _version(ws, tmp_path, 3, 2, [qa("Where is the new support centre?", "Porto")])
    m4 = _version(ws, tmp_path, 4, None, [qa("Where is the new support centre?", "Porto")])
    items = [
        EvalItem("copied", "Who has served as chief financial officer since March 2019?", ("Priya Raman",)),
        EvalItem("replayed", "At what temperature does water boil at sea level?", ("100",)),
        EvalItem("boiling", "water boils at one hundred degrees celsius at sea level", ("yes",)),
        EvalItem("clean", "How many engineers work in Lisbon?", ("40",)),
    ]
    records = training_records(ws, [m3])
    assert sorted(records) == ["m-v1", "m-v2", "m-v3", f"replay:{general}"]
    report = leakage_report(items, records)
    assert report["leaked_items"] == ["boiling", "copied"]
    assert {(x["item_id"], x["dataset"]) for x in report["leaks"]} == {
        ("copied", "m-v1"),
        ("boiling", f"replay:{general}"),
    }
    # retrained from the base: none of m@1's weights, so none of its data
    assert sorted(training_records(ws, [m4])) == ["m-v4"] and leakage_report(items, training_records(ws, [m4]))["ok"]


def test_a_lineage_whose_data_is_gone_cannot_be_checked(tmp_path):
    from imprint.errors import ImprintError
    from imprint.evaluate.leakage import training_records
    from imprint.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    _version(ws, tmp_path, 1, None, [qa("Who is the CFO?", "Priya Raman")])
    m2 = _version(ws, tmp_path, 2, 1, [qa("Who is the CTO?", "Dana Ode")])
    ws.db.execute("DELETE FROM datasets WHERE name = 'm-v1'")  # as a workspace copied without it would be
    with pytest.raises(ImprintError, match=r"module m@1 trained on dataset 'm-v1', which is gone: .* leakage"):
        training_records(ws, [m2])
    orphan = {**m2, "version": 3, "parent": 7}
    with pytest.raises(ImprintError, match=r"module m@3 descends from version 7, which is not in this workspace"):
        training_records(ws, [orphan])
