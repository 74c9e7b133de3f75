"""Eval sets: the JSONL format, the shared retention sets read by path, and one-line errors for bad lines."""

import json
import os
from pathlib import Path

import pytest
from skip_policy import skip_or_fail

from imprint.errors import ImprintError
from imprint.evaluate.evalset import load_eval_set, load_eval_sets, sample_items, write_eval_set

SAMPLE = Path(__file__).parents[2] / "imprint" / "data" / "sample"
# the shared data folder (tests/README.md): $IMPRINT_SHARED_DATA, else shared/data beside the checkout
SHARED_DATA = Path(os.environ.get("IMPRINT_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
RETENTION = SHARED_DATA / "retention"


def write(path: Path, *rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_sample_sets_load_with_splits_and_unanswerable_items():
    items = load_eval_sets([SAMPLE / "eval.jsonl", SAMPLE / "eval_unanswerable.jsonl"])
    assert len(items) == 50 and all(i.split == "learn" for i in items)
    unanswerable = [i for i in items if not i.answerable]
    assert len(unanswerable) == 10 and all(i.answers == () for i in unanswerable)
    assert items[0].id == "q01" and items[0].doc_ids == ("02-people.md",) and items[0].source == "eval"


def test_shared_retention_sets_are_read_by_path_in_the_same_format():
    if not RETENTION.is_dir():  # skipped locally, a failure in CI
        skip_or_fail(f"shared retention data not at {RETENTION}: set IMPRINT_SHARED_DATA to the shared data folder")
    nq = load_eval_set(RETENTION / "nq_open_dev_300.jsonl")
    mmlu = load_eval_set(RETENTION / "mmlu_285.jsonl")
    assert len(nq) == 300 and len(mmlu) == 285
    assert all(i.split == "retain" and not i.is_choice for i in nq)
    assert all(i.is_choice and len(i.choices) == 4 for i in mmlu)
    first = mmlu[0]
    assert first.choices[first.gold_choice] == first.answers[0]
    limited = load_eval_sets([RETENTION / "mmlu_285.jsonl"], retain_limit=20)
    assert len(limited) == 20 and limited == load_eval_sets([RETENTION / "mmlu_285.jsonl"], retain_limit=20)


def test_sample_is_seeded_and_keeps_file_order(tmp_path):
    items = load_eval_set(write(tmp_path / "e.jsonl", *[{"question": f"q{n}?", "answers": ["a"]} for n in range(10)]))
    picked = sample_items(items, 4)
    assert picked == sample_items(items, 4) and len(picked) == 4
    assert [int(i.id.split("-")[1]) for i in picked] == sorted(int(i.id.split("-")[1]) for i in picked)
    assert sample_items(items, 99) == items


def test_round_trip_through_write(tmp_path):
    rows = [
        {"id": "c", "question": "Pick", "answers": ["b"], "choices": ["a", "b"], "split": "retain"},
        {"id": "u", "question": "Unknown?", "answers": [], "answerable": False},
    ]
    items = load_eval_set(write(tmp_path / "in.jsonl", *rows))
    assert load_eval_set(write_eval_set(tmp_path / "out.jsonl", items)) == [
        i.__class__(**{**i.__dict__, "source": "out"}) for i in items
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "Expecting value"),
        ({"question": "q?"}, "'answers'"),
        ({"question": "", "answers": ["a"]}, "non-empty"),
        ({"question": "q?", "answers": "a"}, "list of strings"),
        ({"question": "q?", "answers": ["a"], "split": "train"}, "split"),
        ({"question": "q?", "answers": []}, "answerable"),
        ({"question": "q?", "answers": ["c"], "choices": ["a", "b"]}, "choices"),
        ({"question": "q?", "answers": ["a"], "choices": ["a"]}, "at least two"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", {"question": "fine?", "answers": ["x"]}, line)
    with pytest.raises(ImprintError) as exc:
        load_eval_set(path)
    assert f"{path}:2:" in str(exc.value) and message in str(exc.value)


def test_duplicate_ids_across_sets_are_refused(tmp_path):
    a = write(tmp_path / "a.jsonl", {"id": "x", "question": "q?", "answers": ["a"]})
    b = write(tmp_path / "b.jsonl", {"id": "x", "question": "r?", "answers": ["b"]})
    with pytest.raises(ImprintError, match="appears twice"):
        load_eval_sets([a, b])
