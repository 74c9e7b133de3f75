"""Every answer mode on the tiny model with a real retrieval index, and the icl KV-cache reuse made exact."""

import copy

import pytest
import torch

from imprint.answer import ABSTAIN_TEXT, MODES, Answerer, _answer_in_context, answer_questions, greedy_answers
from imprint.errors import ImprintError
from imprint.evaluate.calibration import Calibration
from imprint.ingest import chunk_text
from imprint.models import load_base
from imprint.prompts import CONTEXT_INSTRUCTION, completion_prompt, passages_block, qa_prompt
from imprint.retrieval import Retriever
from imprint.workspace import Workspace

TEXT = (
    "Priya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year. The Halifax office has 61 employees."
)


@pytest.fixture(scope="module")
def base():
    return load_base("tiny")


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    ws.put_document("/docs/team.md", "Team", TEXT, chunk_text(TEXT, lambda s: len(s.split()), max_tokens=12))
    return ws


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_answers_with_evidence(base, ws, mode):
    retriever = Retriever.open(ws)
    documents = [(d.title, d.text) for d in ws.documents()]
    questions = ["Who is the CFO?", "How many days of leave?"]
    answers = answer_questions(
        base.model, base.tokenizer, questions, mode, retriever=retriever, corpus=documents, max_new_tokens=6
    )
    assert [a.mode for a in answers] == [mode, mode]
    for a in answers:
        assert 0.0 <= a.confidence <= 1.0 and a.latency_ms > 0
        assert a.evidence and {"doc_id", "title", "chunk_id", "quote", "score"} <= set(a.evidence[0])
        assert a.evidence[0]["quote"] in TEXT and a.supported in (True, False)
        assert set(a.signals) == {"logprob", "relevance", "support"}
    closed_book = len(base.tokenizer(qa_prompt(questions[0])).input_ids)
    if mode in ("base", "module"):
        assert answers[0].prompt_tokens == closed_book
    else:  # the passages are in the prompt, and counted
        assert answers[0].prompt_tokens > closed_book + 40
    if mode == "icl":
        assert answers[0].prompt_tokens > len(TEXT)  # byte-level tokenizer: the whole corpus is in context


def test_icl_cache_reuse_gives_the_same_answer_as_the_full_prompt(base):
    documents = [("Team", TEXT)]
    questions = ["Who is the CFO?", "Where is the office?"]
    cached = _answer_in_context(base.model, base.tokenizer, documents, questions, max_new_tokens=8)
    prompts = [f"{CONTEXT_INSTRUCTION}{passages_block(documents)}\n\n{qa_prompt(q)}" for q in questions]
    full = greedy_answers(base.model, base.tokenizer, prompts, max_new_tokens=8, batch_size=1)
    assert [(a, round(p, 3)) for a, p, _, _ in cached] == [(a, round(p, 3)) for a, p, _, _ in full]
    assert [n for _, _, n, _ in cached] == [n for _, _, n, _ in full]


def test_icl_completion_continues_the_prompt_after_the_corpus(base):
    documents = [("Team", TEXT)]
    prompts = ["Priya Raman has served as chief financial officer since", "Employees receive"]
    cached = _answer_in_context(base.model, base.tokenizer, documents, prompts, max_new_tokens=8, completion=True)
    full = greedy_answers(base.model, base.tokenizer, [completion_prompt(p, documents) for p in prompts], 8, 1)
    assert [(a, round(p, 3), n) for a, p, n, _ in cached] == [(a, round(p, 3), n) for a, p, n, _ in full]


def test_icl_refuses_a_corpus_larger_than_the_window(base):
    window = base.model.config.max_position_embeddings
    with pytest.raises(ImprintError, match=f"does not fit the model's {window}-token context window"):
        answer_questions(base.model, base.tokenizer, ["Q?"], "icl", corpus=[("Big", "word " * window)])


def test_mode_requirements_fail_clearly(base):
    with pytest.raises(ImprintError, match="needs a retrieval index"):
        answer_questions(base.model, base.tokenizer, ["Q?"], "rag")
    with pytest.raises(ImprintError, match="needs the corpus"):
        answer_questions(base.model, base.tokenizer, ["Q?"], "icl")
    with pytest.raises(ImprintError, match="unknown mode"):
        answer_questions(base.model, base.tokenizer, ["Q?"], "oracle")


def test_module_mode_changes_the_answer_distribution(base, ws):
    from imprint import registry

    method = registry.method("lora")()
    model = copy.deepcopy(base.model)
    torch.manual_seed(0)
    method.attach(model, method.config_class(r=4))
    for name, param in model.named_parameters():  # a non-zero adapter, as after training
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    q = ["Who is the CFO?"]
    plain = answer_questions(base.model, base.tokenizer, q, "base", max_new_tokens=6)[0]
    moduled = answer_questions(model, base.tokenizer, q, "module", module="m@1", max_new_tokens=6)[0]
    assert moduled.module == "m@1" and (moduled.guess, moduled.confidence) != (plain.guess, plain.confidence)


def test_abstains_below_the_calibrated_threshold(base, ws):
    retriever = Retriever.open(ws)
    # an answerability model that abstains when the best evidence sentence is far from the question
    params = {"mean": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0], "weights": [0.0, 40.0, 0.0, -20.0]}
    cal = Calibration("rag", None, params, 0.5, {"calibrated": True})
    answers = answer_questions(
        base.model,
        base.tokenizer,
        ["How many days of paid annual leave do employees receive?", "zebra quantum xylophone?"],
        "rag",
        retriever=retriever,
        calibration=cal,
        max_new_tokens=4,
    )
    relevant, unrelated = answers
    assert relevant.signals["relevance"] > 0.5 > unrelated.signals["relevance"]
    assert not relevant.abstained and relevant.answer == relevant.guess
    assert unrelated.abstained and unrelated.answer == ABSTAIN_TEXT and unrelated.guess


def test_answerer_loads_what_the_mode_needs(ws, monkeypatch, tmp_path):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    answerer = Answerer(ws, "rag", model="tiny")
    assert answerer.retriever is not None and answerer.corpus is None and answerer.system == "rag"
    assert answerer.calibration.report == {"calibrated": False}
    assert len(answerer(["Who is the CFO?"], max_new_tokens=3)) == 1
    with pytest.raises(ImprintError, match="needs a module"):
        Answerer(ws, "module+rag", model="tiny")
    with pytest.raises(ImprintError, match="needs documents"):
        Answerer(Workspace.open(tmp_path / "empty"), "rag", model="tiny")
