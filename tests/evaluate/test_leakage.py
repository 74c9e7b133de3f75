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
