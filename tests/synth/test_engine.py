"""The engine with a scripted generator: budget spread, rounds, resumption, provenance, templates, multi-step."""

import json
import re

import pytest

from imprint.errors import ConfigError
from imprint.synth.budget import allocate, parse_tokens
from imprint.synth.engine import synthesize
from imprint.synth.gates import GateConfig
from imprint.synth.generators import GeneratorError
from imprint.synth.generators.scripted import ScriptedGenerator
from imprint.synth.journal import Journal
from imprint.synth.rules import find_spans, mid_sentence_names, sentences_of
from imprint.testing import document
from imprint.workspace import Chunk

TEXTS = {
    "people": [
        "Orla Quennell has been chief executive officer of Tallowby Hydrometrics since 2009. She founded it.",
    ],
    "offices": [
        "Tallowby Hydrometrics has four offices. The head office is in Rotterdam and employs 140 people.",
        "The Bergen office opened in 2015 and builds river sensors for 12 clients.",
        "Ines Vathanakul oversees all four sites as chief operating officer since July 2021.",
    ],
}


DOCS = [document(d, d.title(), " ".join(texts)) for d, texts in TEXTS.items()]
CHUNKS = [Chunk(f"{d}:{i}", d, 1, i, t, len(t.split())) for d, texts in TEXTS.items() for i, t in enumerate(texts)]


def last_passage(prompt: str) -> str:
    return re.split(r"\n(?:Passage(?: [AB])?|Document|Text): ", prompt)[-1].split("\n")[0]


def faithful(prompt: str) -> str:
    """A grounded, non-copying answer to any template: the passage's names and numbers, restated."""
    body = last_passage(prompt)
    sentences = sentences_of(body)
    known = mid_sentence_names(sentences)
    spans = list(dict.fromkeys(sp.text(s) for s in sentences for sp in find_spans(s, known)))
    facts = ", ".join(spans) or "nothing"
    tail = prompt.rstrip().rsplit("\n", 1)[-1]
    if tail == "Question:":
        if prompt.startswith("Why"):
            question = f"Why does the passage mention {spans[0]}?"
        elif "\nPassage A: " in prompt:
            question = f"What links both passages besides {spans[0]}?"
        else:
            question = f"What does the passage name besides {spans[0]}?"
        return f" {question}\nAnswer: {facts}\nQuestion: Who is Zed Quorn?\nAnswer: Zed\n\n"
    if tail == "Entities:":
        return " " + "; ".join(spans + ["Harwick Bridge"]) + "\n"
    if tail == "1.":
        return " Make a list of every site and what happens there.\n2. Quiz yourself on the dates.\n\nDocument:"
    if tail == "Notes:":
        task = prompt.rsplit("Task: ", 1)[1].split("\n")[0].rstrip(".").lower()
        return f" To {task}, note {facts}.\n\nPassage: x"
    if tail == "Discussion:":
        asked = re.search(r"How are (.+) related\?", prompt.rsplit("Question: ", 1)[1]).group(1)
        return f" Here {asked} come up together with {facts}.\n\nText: x"
    return f" In short, this passage is about {facts}; each of these is stated there plainly.\n\nPassage: x"


def words(text: str) -> int:
    return len(text.split())


def run(strategy, tmp_path, generator=None, tokens=None, journal="journal.jsonl", docs=DOCS, chunks=CHUNKS):
    generator = generator or ScriptedGenerator(faithful)
    gates = GateConfig(min_support=0)  # the scripted restatements talk about "the passage": no support gate here
    return synthesize(strategy, generator, docs, chunks, Journal(tmp_path / journal), words, tokens, gates=gates)


def strategy(name, **config):
    from imprint import registry

    cls = registry.strategy(name)
    return cls(cls.config_class(**config))


def test_parse_and_allocate_tokens():
    assert parse_tokens("500k") == 500_000 and parse_tokens("1.5M") == 1_500_000 and parse_tokens("20000") == 20000
    assert parse_tokens(None) is None
    for bad in ("lots", "0", "-5k"):
        with pytest.raises(ConfigError):
            parse_tokens(bad)
    assert allocate(1000, {"a": 1, "b": 3}) == {"a": 250, "b": 750}
    assert sum(allocate(1001, {"a": 1, "b": 1, "c": 1}).values()) == 1001


def test_budget_is_spread_by_document_size(tmp_path):
    result = run(strategy("paraphrase"), tmp_path, tokens=600)
    docs = result.stats["by_document"]
    size = {d: sum(c.n_tokens for c in CHUNKS if c.doc_id == d) for d in ("people", "offices")}
    for d in docs:
        assert docs[d]["budget"] == round(600 * size[d] / sum(size.values()))
        unit_cost = max(words(faithful(f"Passage: {c.text}")) for c in CHUNKS)
        assert docs[d]["budget"] <= docs[d]["tokens"] < docs[d]["budget"] + 3 * unit_cost  # stops once spent
    assert docs["people"]["rounds"] > 1  # a small document with budget left gets further rounds


def test_without_budget_each_round_is_one_pass(tmp_path):
    result = run(strategy("paraphrase", rounds=2), tmp_path)
    assert result.stats["units"] == 2 * 3 * len(CHUNKS)  # rounds x styles x chunks
    samples = {json.loads(line)["sample"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()}
    assert samples == {0, 1}


def test_records_carry_provenance(tmp_path):
    result = run(strategy("qa"), tmp_path)
    assert result.records
    chunk_doc = {c.id: c.doc_id for c in CHUNKS}
    for r in result.records:
        assert r.generator == "scripted" and r.strategy == "qa"
        assert r.meta["template"].startswith("qa.") and re.fullmatch(r"1\+[0-9a-f]{8}", r.meta["template_version"])
        assert r.meta["unit"].startswith("u") and r.meta["sample"] == 0
        assert {chunk_doc[c] for c in r.source_chunk_ids} == {r.meta["doc_id"]}
    assert {r.meta["kind"] for r in result.records} == {"factual", "why_how", "compare"}
    # the scripted model also invents "Zed Quorn": every such pair is dropped as ungrounded
    assert not any("Zed" in r.question for r in result.records)
    assert result.report.summary()["dropped"]["ungrounded"] >= len(CHUNKS)


@pytest.mark.parametrize("name", ["paraphrase", "qa", "entigraph", "active-reading"])
def test_interrupted_run_resumes_without_duplicates_or_gaps(tmp_path, name):
    whole = run(strategy(name), tmp_path / "whole", tokens=900)
    total_units = whole.stats["units"]

    crashing = ScriptedGenerator(faithful, fail_after=10)
    crashing.batch_size = 4
    with pytest.raises(GeneratorError):
        run(strategy(name), tmp_path / "resumed", generator=crashing, tokens=900)
    journalled = len((tmp_path / "resumed" / "journal.jsonl").read_text().splitlines())
    assert 0 < journalled < total_units

    rest = ScriptedGenerator(faithful)
    resumed = run(strategy(name), tmp_path / "resumed", generator=rest, tokens=900)
    assert len(rest.prompts) == total_units - journalled  # nothing generated twice, nothing skipped
    assert resumed.stats["units_cached"] == journalled
    assert [r.id for r in resumed.records] == [r.id for r in whole.records]  # the same dataset, no duplicate
    assert len({r.id for r in resumed.records}) == len(resumed.records)
    keys = [json.loads(line)["key"] for line in (tmp_path / "resumed" / "journal.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == total_units


def test_torn_journal_line_is_generated_again(tmp_path):
    first = run(strategy("paraphrase"), tmp_path)
    path = tmp_path / "journal.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a kill mid-write
    again = ScriptedGenerator(faithful)
    second = run(strategy("paraphrase"), tmp_path, generator=again)
    assert len(again.prompts) == 1 and [r.id for r in second.records] == [r.id for r in first.records]


def test_user_templates_override_and_add_styles(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "paraphrase.yaml").write_text(
        "version: 7\nprompts:\n  telegram:\n    max_tokens: 50\n    template: |-\n"
        "      Rewrite as a telegram.\n      Passage: {{ text }}\n      Telegram:\n"
    )
    result = run(strategy("paraphrase", templates=str(folder), styles="telegram,plain"), tmp_path)
    candidates = result.records + [r for r, _, _ in result.report.dropped]  # one style's copies are duplicates
    versions = {r.meta["template"]: r.meta["template_version"] for r in candidates}
    assert set(versions) == {"paraphrase.telegram", "paraphrase.plain"}
    assert versions["paraphrase.telegram"].startswith("7+") and versions["paraphrase.plain"].startswith("1+")
    (folder / "paraphrase.yaml").write_text("prompts:\n  plain: 'Passage: {{ txet }}'\n")
    with pytest.raises(ConfigError, match="txet"):
        run(strategy("paraphrase", templates=str(folder)), tmp_path, journal="other.jsonl")
    (folder / "paraphrase.yaml").write_text("prompts: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read template file"):
        strategy("paraphrase", templates=str(folder))
    with pytest.raises(ConfigError, match="no prompt 'haiku'"):
        strategy("paraphrase", styles="haiku")


def test_entigraph_relates_only_entities_of_the_document(tmp_path):
    gen = ScriptedGenerator(faithful)
    result = run(strategy("entigraph"), tmp_path, generator=gen)
    relation_prompts = [p for p in gen.prompts if "related?\nDiscussion:" in p]
    assert relation_prompts and not any("Harwick Bridge" in p.rsplit("Text:", 1)[1] for p in relation_prompts)
    assert all(r.meta["entities_from"] == "generator" for r in result.records)
    assert {len(r.meta["entities"]) for r in result.records} == {2, 3}

    gen = ScriptedGenerator(lambda p: " ; ; Zorblat\n" if p.endswith("Entities:") else faithful(p))
    result = run(strategy("entigraph"), tmp_path, generator=gen, journal="fallback.jsonl")
    assert result.records and {r.meta["entities_from"] for r in result.records} == {"rules"}


def test_active_reading_applies_the_proposed_plan(tmp_path):
    gen = ScriptedGenerator(faithful)
    result = run(strategy("active-reading", tasks_per_chunk=2), tmp_path, generator=gen)
    tasks = {r.meta["task"]: r.meta["task_from"] for r in result.records}
    assert tasks["Make a list of every site and what happens there."] == "generator"
    assert tasks["Quiz yourself on the dates."] == "generator"
    gen = ScriptedGenerator(lambda p: " ok\n" if p.endswith("1.") else faithful(p))
    result = run(strategy("active-reading"), tmp_path, generator=gen, journal="template.jsonl")
    assert result.records and {r.meta["task_from"] for r in result.records} == {"template"}


def test_strategy_settings_are_validated():
    from imprint.config import build
    from imprint.synth.qa import QAConfig

    with pytest.raises(ConfigError, match="kinds"):
        build(QAConfig, "synth", {"kinds": "factual,trivia"})
    with pytest.raises(ConfigError, match="temperature"):
        build(QAConfig, "synth", {"temperature": "-1"})
