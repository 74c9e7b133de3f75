"""Completion probes (`prompt` instead of `question`): continued as given in every mode, scored by answer contained,
reported per probe kind, and exempt from the leakage check only when they quote the corpus by design."""

import json

import pytest

from imprint.evaluate.evalset import EvalItem, load_eval_set
from imprint.evaluate.leakage import leakage_report
from imprint.evaluate.metrics import answer_contained
from imprint.evaluate.run import EvalOptions, by_probe, evaluate
from imprint.ingest import chunk_text
from imprint.models import load_base
from imprint.prompts import completion_prompt
from imprint.synth.records import SynthRecord
from imprint.system import answer_questions
from imprint.workspace import Workspace

TEXT = (
    "Galactica is a Canadian indie rock band originally formed by Maple Leaf Productions. "
    "The band's first album, Northern Lights, was released in 2005."
)
ITEMS = [
    {"id": "q", "question": "Who formed Galactica?", "answers": ["Maple Leaf Productions"]},
    {"id": "m", "prompt": "Galactica is a Canadian indie rock band originally formed by",
     "answers": ["Maple Leaf Productions"], "probe": "memorise"},
    {"id": "p", "prompt": "Galactica, a Canadian indie rock band, was initially established by",
     "answers": ["Maple Leaf Productions"], "probe": "paraphrase"},
    {"id": "h", "prompt": "The debut album of the band formed by Maple Leaf Productions is called",
     "answers": ["Northern Lights"], "probe": "hard"},
]  # fmt: skip


def test_answer_contained_by_hand():
    assert answer_contained(" Maple Leaf Productions in 2003, and later", ["Maple Leaf Productions"]) == 1.0
    assert answer_contained("the Maple Leafs", ["Maple Leaf"]) == 0.0  # whole words only
    assert answer_contained("It was The Northern Lights.", ["northern lights", "x"]) == 1.0
    assert answer_contained("nothing", ["", "x"]) == 0.0


def test_probes_load_with_their_kind_and_round_trip(tmp_path):
    from imprint.evaluate.evalset import write_eval_set

    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    items = load_eval_set(path)
    assert [(i.completion, i.probe) for i in items] == [
        (False, ""), (True, "memorise"), (True, "paraphrase"), (True, "hard")
    ]  # fmt: skip
    assert items[1].question == ITEMS[1]["prompt"]
    again = load_eval_set(write_eval_set(tmp_path / "out.jsonl", items))
    assert [(i.question, i.completion, i.probe) for i in again] == [(i.question, i.completion, i.probe) for i in items]


def test_a_probe_cannot_be_multiple_choice(tmp_path):
    from imprint.errors import ImprintError

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "The sky is", "answers": ["blue"], "choices": ["blue", "red"]}) + "\n")
    with pytest.raises(ImprintError, match="bad.jsonl:1:.*completion probe"):
        load_eval_set(path)


def test_leakage_exempts_memorise_probes_only():
    corpus = SynthRecord.make("prose", ["c1"], "text", text=TEXT)
    memorise = EvalItem("m", ITEMS[1]["prompt"], ("Maple Leaf Productions",), completion=True, probe="memorise")
    paraphrase = EvalItem("p", ITEMS[2]["prompt"], ("Maple Leaf Productions",), completion=True, probe="paraphrase")
    report = leakage_report([memorise, paraphrase], {"d": [corpus]})
    assert report["ok"] and report["exempt_items"] == 1 and report["checked_items"] == 1
    leaked = SynthRecord.make("prose", ["c1"], "text", text="Note: " + ITEMS[2]["prompt"] + " someone.")
    report = leakage_report([memorise, paraphrase], {"d": [corpus, leaked]})
    assert not report["ok"] and report["leaked_items"] == ["p"]  # a reworded probe in training data is a leak


def test_by_probe_by_hand():
    rows = [
        {"completion": True, "probe": "memorise", "em": 1.0, "f1": 1.0, "contained": 1.0},
        {"completion": True, "probe": "memorise", "em": 0.0, "f1": 0.5, "contained": 1.0},
        {"completion": True, "probe": "hard", "em": 0.0, "f1": 0.0, "contained": 0.0},
        {"completion": False, "probe": "", "em": 1.0, "f1": 1.0, "contained": 1.0},
    ]
    got = by_probe(rows)
    assert got == {
        "hard": {"n": 1, "exact_match": 0.0, "token_f1": 0.0, "answer_contained": 0.0},
        "memorise": {"n": 2, "exact_match": 0.5, "token_f1": 0.75, "answer_contained": 1.0},
    }


def test_eval_continues_probes_as_given_in_every_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    ws = Workspace.open(tmp_path / "ws")
    ws.put_document("/docs/band.md", "Galactica", TEXT, chunk_text(TEXT, lambda s: len(s.split()), max_tokens=20))
    tiny = load_base("tiny")
    tokenizer = tiny.tokenizer
    # one more probe, whose gold is what the base model itself continues the memorise prompt with
    said = answer_questions(tiny.model, tokenizer, [ITEMS[1]["prompt"]], "base", completion=True)[0].generated
    echo = {"id": "e", "prompt": ITEMS[1]["prompt"], "answers": [said], "probe": "echo"}
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in [*ITEMS, echo]))
    options = EvalOptions(modes=("base", "icl", "rag"), retention_samples=2, retention_tokens=8)
    card = evaluate(ws, [path], [], model="tiny", options=options)
    base, icl, rag = card["systems"]
    for system in (base, icl, rag):
        assert [r["id"] for r in system["rows"]] == ["q", "m", "p", "h", "e"]  # questions and probes, in file order
        assert [r["completion"] for r in system["rows"]] == [False, True, True, True, True]
        assert set(system["by_probe"]) == {"memorise", "paraphrase", "hard", "echo"}
        assert system["by_probe"]["hard"]["n"] == 1 and system["answer_contained"] is not None
    # scored on what was generated: the base's own continuation is its gold, the band's real label is not written
    assert base["rows"][4]["answer"] == said
    assert base["by_probe"]["echo"] == {"n": 1, "exact_match": 1.0, "token_f1": 1.0, "answer_contained": 1.0}
    assert base["by_probe"]["memorise"] == {"n": 1, "exact_match": 0.0, "token_f1": 0.0, "answer_contained": 0.0}
    assert base["answer_contained"] == 0.2  # 1 of the 5 answerable items
    # closed book: the probe itself, no "Question: ... Answer:" wrapper around it
    assert base["rows"][1]["prompt_tokens"] == len(tokenizer(ITEMS[1]["prompt"]).input_ids)
    assert base["rows"][0]["prompt_tokens"] > len(tokenizer(ITEMS[0]["question"]).input_ids)  # the wrapper
    # rag: the passages, then the probe as given
    chunks = {c.id: c.text for c in ws.chunks()}
    passages = [(e["title"], chunks[e["chunk_id"]]) for e in rag["rows"][1]["evidence"]]
    assert rag["rows"][1]["prompt_tokens"] == len(tokenizer(completion_prompt(ITEMS[1]["prompt"], passages)).input_ids)
    assert icl["rows"][1]["prompt_tokens"] > len(tokenizer(TEXT).input_ids)
    assert card["leakage"]["ok"]
