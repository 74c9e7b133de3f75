"""Change sets: the item fields, the adopted / retired / retained rates, and the sample corpus's second edition
(its questions agree with the text of both editions)."""

import json
from pathlib import Path

import pytest

from imprint.errors import ImprintError
from imprint.evaluate.changes import annotate, rates, relative_rates
from imprint.evaluate.evalset import load_eval_set, write_eval_set
from imprint.evaluate.metrics import answer_contained

SAMPLE = Path(__file__).resolve().parents[2] / "imprint" / "data" / "sample"
ITEMS = [
    {"id": "c", "question": "Leave days?", "answers": ["29"], "change": "changed", "old_answers": ["27"]},
    {"id": "a", "question": "Boat?", "answers": ["Marsh Harrier"], "change": "added"},
    {
        "id": "r",
        "question": "Card?",
        "answers": [],
        "answerable": False,
        "change": "removed",
        "old_answers": ["Keelcard"],
    },
    {"id": "u1", "question": "CEO?", "answers": ["Orla Quennell"], "change": "unchanged"},
    {"id": "u2", "question": "Plant?", "answers": ["Ballinasloe"], "change": "unchanged"},
]


def _items(tmp_path, raw=ITEMS):
    path = tmp_path / "changes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in raw))
    return load_eval_set(path)


def _rows(items, answers, abstained=()):
    rows = [{"id": i.id, "answer": a, "abstained": i.id in abstained} for i, a in zip(items, answers, strict=True)]
    annotate(rows, items)
    return rows


def test_change_fields_round_trip_and_bad_ones_are_one_line_errors(tmp_path):
    items = _items(tmp_path)
    assert [i.change for i in items] == ["changed", "added", "removed", "unchanged", "unchanged"]
    assert items[0].old_answers == ("27",) and not items[2].answerable
    assert load_eval_set(write_eval_set(tmp_path / "again.jsonl", items)) == [
        i.__class__(**{**i.__dict__, "source": "again"}) for i in items
    ]
    bad = [
        ({"change": "edited"}, "'change' must be one of"),
        ({"change": "changed"}, "needs 'old_answers'"),
        ({"change": "removed", "old_answers": ["x"]}, 'set "answerable": false'),
        ({"change": "changed", "old_answers": "27"}, "'old_answers' must be a list"),
    ]
    for fields, message in bad:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps({"question": "Q?", "answers": ["a"], **fields}) + "\n")
        with pytest.raises(ImprintError, match=message) as info:
            load_eval_set(path)
        assert "\n" not in str(info.value)


def test_rates_count_new_and_old_values_as_whole_words(tmp_path):
    items = _items(tmp_path)
    # v1 knew the old leave days, not the boat, the card and the CEO; v2 says both leave values, knows the boat,
    # abstains on the card, keeps the CEO and misses the plant
    v1 = _rows(items, ["27 days", "no idea", "The Keelcard", "Orla Quennell", "Galway"])
    v2 = _rows(
        items, ["29 days (previously 27)", "the Marsh Harrier", "Not in my knowledge", "Quennell, Orla", "x"], {"r"}
    )
    got = rates(v2)
    assert got["adopted"] == 1.0 and got["adopted_changed"] == 1.0 and got["adopted_added"] == 1.0
    assert got["retired"] == 0.5 and got["retired_changed"] == 0.0 and got["retired_removed"] == 1.0
    assert got["retained"] == 0.0  # "Quennell, Orla" does not contain "Orla Quennell" as written
    assert got["removed_old_given"] == 0.0 and got["removed_abstained"] == 1.0
    assert got["n"] == {"adopt": 2, "retire": 2, "retain": 2}
    assert rates(v1)["retired"] == 0.0 and rates(v1)["retained"] == 0.5
    relative = relative_rates(v2, v1)
    assert relative == {
        "retained_of_reference": 0.0,
        "n_reference_knew": 1,
        "retired_of_reference": 0.5,
        "n_reference_old": 2,
    }


def _text(folder: Path, doc: str) -> str:
    return (folder / doc).read_text()


def test_the_sample_second_edition_matches_its_questions():
    changes = json.loads((SAMPLE / "edition2" / "changes.json").read_text())
    corpus, edition = SAMPLE / "corpus", SAMPLE / "edition2"
    assert {p.name for p in edition.glob("*.md")} == set(changes["changed"] + changes["added"])
    assert all((corpus / d).exists() for d in changes["changed"] + changes["removed"])
    assert not any((corpus / d).exists() for d in changes["added"])
    items = load_eval_set(SAMPLE / "eval_edition2.jsonl")
    kinds = {k: [i for i in items if i.change == k] for k in ("added", "changed", "removed", "unchanged")}
    assert all(len(v) >= 4 for v in kinds.values())
    for item in kinds["changed"]:
        (doc,) = item.doc_ids
        assert answer_contained(_text(edition, doc), item.answers), item.id  # the new value is in the new text
        assert not answer_contained(_text(edition, doc), item.old_answers), item.id  # and the old one is gone
        assert answer_contained(_text(corpus, doc), item.old_answers), item.id
    for item in kinds["added"]:
        (doc,) = item.doc_ids
        assert answer_contained(_text(edition, doc), item.answers), item.id
        assert not (corpus / doc).exists() or not answer_contained(_text(corpus, doc), item.answers), item.id
    for item in kinds["removed"]:
        assert set(item.doc_ids) <= set(changes["removed"]) and not item.answerable
        assert answer_contained(_text(corpus, item.doc_ids[0]), item.old_answers), item.id
    for item in kinds["unchanged"]:
        current = [edition / d if (edition / d).exists() else corpus / d for d in item.doc_ids]
        assert not set(item.doc_ids) & set(changes["removed"])
        assert any(answer_contained(p.read_text(), item.answers) for p in current), item.id
