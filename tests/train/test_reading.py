"""Open-book (reading) records: questions after retrieved passages, gold or distractors only, trained on the answer."""

import json

import pytest

from imprint import pipeline
from imprint.prompts import context_prompt
from imprint.retrieval import Retriever
from imprint.synth.records import read_records
from imprint.testing import tiny_lm
from imprint.train.data import IGNORE, encode_record
from imprint.train.reading import reading_records
from imprint.workspace import Workspace

DOCS = {
    "harbour.md": "# Harbour\n\nThe Dunmere harbour was dredged in 1911 by the engineer Alma Voss. "
    "Its lighthouse burns whale oil.\n\nFerries to Kell leave at dawn.",
    "orchard.md": "# Orchard\n\nThe Pell orchard grows quince and medlar. Its cider press was built by Tomas Orr "
    "in 1887.\n\nPickers are paid by the crate.",
    "mill.md": "# Mill\n\nThe Sorrel mill grinds rye with a water wheel of oak. Miriam Hale ran it from 1902 to "
    "1930.\n\nFlour goes to Kell by barge.",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One workspace with the documents added and synthesised (embedding them is the slow part), and its records."""
    tmp_path = tmp_path_factory.mktemp("reading")
    for name, text in DOCS.items():
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "docs" / name).write_text(text)
    ws = Workspace.open(tmp_path / "ws")
    pipeline.add(ws, [str(tmp_path / "docs")], model="tiny", max_tokens=40)
    dataset = pipeline.synth(ws, "rules")["name"]
    retriever = Retriever.open(ws)
    yield ws, read_records(ws.data_dir(dataset)), retriever
    retriever.close()


def test_reading_records_hold_the_source_passage_or_only_distractors(built):
    ws, records, retriever = built
    reading = reading_records(records, retriever, share=1.0, k=2, seed=0)
    questions = [r for r in records if r.kind == "qa"]
    assert len(reading) == len(questions)
    half = reading_records(records, retriever, share=0.5, k=2, seed=3)
    assert [r.meta for r in reading_records(records, retriever, share=0.5, k=2, seed=3)] == [r.meta for r in half]
    chunks = {c.id: c.text for c in ws.chunks()}
    gold = [r for r in reading if r.meta["gold"]]
    assert gold and len(gold) < len(reading)  # both kinds occur
    for r in reading:
        texts = [text for _, text in r.meta["passages"]]
        assert 1 <= len(texts) <= 2 and r.kind == "qa" and r.strategy == "read"
        sources = {chunks[c] for c in r.source_chunk_ids}
        assert bool(sources & set(texts)) == r.meta["gold"]
    assert reading_records(records, retriever, share=0.0, k=2, seed=0) == []


def test_a_reading_record_trains_the_answer_after_the_prompt_module_rag_asks(built):
    ws, records, retriever = built
    record = reading_records(records, retriever, share=0.1, k=2, seed=0)[0]
    _, tok = tiny_lm()
    ex = encode_record(record, tok, 2048)
    prompt = [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label == IGNORE]
    trained = [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE]
    passages = [tuple(p) for p in record.meta["passages"]]
    assert tok.decode(prompt, skip_special_tokens=True) == context_prompt(record.question, passages)
    assert tok.decode(trained) == " " + record.answer.strip() + tok.eos_token


def test_train_read_adds_open_book_records_and_reports_them(built):
    ws, records, _ = built
    train = {"epochs": "1", "read": "0.5", "verify": "false", "checkpoint_every": "0", "compile": "off"}
    manifest = pipeline.train_module(ws, [ws.datasets()[0].name], "m", "lora", "tiny", {"train": train})
    n_qa = sum(r.kind == "qa" for r in records)
    assert manifest["n_records"] == len(records) and manifest["n_reading_records"] == round(n_qa * 0.5)
    saved = json.loads((ws.module_dir("m", 1) / "manifest.json").read_text())
    assert saved["config"]["train"]["read"] == 0.5
