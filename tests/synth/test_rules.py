"""The offline strategy: restatements, wh/fronted questions and cloze pairs, each traceable to its chunk."""

from imprint.synth.rules import RulesConfig, RulesStrategy, find_spans, fronted_question, wh_question
from imprint.testing import document
from imprint.workspace import Chunk

TEXT = (
    "# People\n\n"
    "Teodora Blanchard serves as chief executive officer of Vornakel Systems. She joined in April 2011. "
    "Priya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year. Parental leave lasts 22 weeks at full pay. "
    "The annual budget is $18.5 million."
)


def synth(**config):
    chunk = Chunk("d1:v1:0", "d1", 1, 0, TEXT, len(TEXT.split()))
    return RulesStrategy(RulesConfig(**config)).synthesize([document("d1", "Handbook", TEXT)], [chunk])


def test_spans_cover_dates_amounts_counts_and_names():
    sentence = "Priya Raman has served as chief financial officer since March 2019 with $18.5 million and 27 days."
    kinds = {s.text(sentence): s.kind for s in find_spans(sentence, set())}
    assert kinds == {"Priya Raman": "name", "March 2019": "date", "$18.5 million": "money", "27 days": "count"}


def test_sentence_opener_is_not_a_name_unless_seen_mid_sentence():
    assert find_spans("Employees receive 27 days.", set())[0].kind == "count"
    assert [s.kind for s in find_spans("Zorblat approves leave.", {"Zorblat"})] == ["name"]


def test_questions_take_the_right_question_word():
    s = "Priya Raman has served as chief financial officer since March 2019."
    spans = {sp.kind: sp for sp in find_spans(s, set())}
    assert wh_question(s, spans["name"]) == "Who has served as chief financial officer since March 2019?"
    assert wh_question(s, spans["date"]) == "Priya Raman has served as chief financial officer since when?"
    assert fronted_question(s, spans["date"]) == "Since when has Priya Raman served as chief financial officer?"
    s2 = "Parental leave lasts 22 weeks at full pay."
    assert fronted_question(s2, find_spans(s2, set())[0]) == "How many weeks does parental leave last at full pay?"


def test_fronting_refuses_coordinations():
    s = "It was founded by Ann Lee and Bo Chen."
    spans = [sp for sp in find_spans(s, set()) if sp.text(s) == "Ann Lee"]
    assert fronted_question(s, spans[0]) is None


def test_records_trace_to_their_chunk_and_resolve_pronouns():
    records = synth()
    assert records and all(r.source_chunk_ids == ("d1:v1:0",) for r in records if r.kind == "qa")
    qa = {(r.question, r.answer) for r in records if r.kind == "qa"}
    assert ("Teodora Blanchard joined when?", "April 2011") in qa  # "She" resolved to the person before
    assert ("Employees receive how many days of paid annual leave per year?", "27 days") in qa
    assert any(q.startswith("Fill in the blank:") for q, _ in qa)
    forms = {r.meta["form"] for r in records}
    assert {"raw", "permuted", "entity", "wh", "fronted", "cloze"} <= forms
    assert len({r.id for r in records}) == len(records)


def test_every_answer_is_a_span_of_the_source():
    for r in synth():
        if r.kind == "qa":
            assert r.answer in TEXT


def test_config_switches_change_output():
    assert not any(r.question.startswith("Fill in") for r in synth(cloze=False))
    assert sum(r.meta["form"] == "permuted" for r in synth(permutations=0)) == 0
    assert synth(seed=1) != synth(seed=2)
