"""Every answer mode of the one `System` on the tiny model with a real retrieval index, and the icl KV-cache reuse
made exact."""

import copy
import math

import pytest
import torch

from imprint.answer import ABSTAIN_TEXT, MODES, confidence, greedy_answers
from imprint.errors import ImprintError
from imprint.evaluate.calibration import Calibration
from imprint.evaluate.metrics import normalize
from imprint.inference import answer_row
from imprint.ingest import chunk_text
from imprint.models import load_base
from imprint.prompts import CONTEXT_INSTRUCTION, completion_prompt, passages_block, qa_prompt
from imprint.retrieval import Retriever
from imprint.system import ContextTooLong, Mode, System, answer_questions
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
        assert a.latency_ms > 0 and set(a.signals) == {"logprob", "relevance", "support"}
        # uncalibrated, confidence is the answer tokens' geometric-mean probability, the logprob signal's exp
        assert a.confidence == pytest.approx(math.exp(a.signals["logprob"]), abs=2e-4) and a.confidence > 0
        assert a.evidence and {"doc_id", "title", "chunk_id", "quote", "score"} <= set(a.evidence[0])
        # the random model's answer has no word of the corpus: the evidence does not support it
        assert a.evidence[0]["quote"] in TEXT and not set(normalize(a.guess).split()) & set(normalize(TEXT).split())
        assert a.supported is False and a.signals["support"] == 0.0
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
    cached = System(Mode.ICL, base.tokenizer, base.model, corpus=documents).answer(questions, max_new_tokens=8)
    prompts = [f"{CONTEXT_INSTRUCTION}{passages_block(documents)}\n\n{qa_prompt(q)}" for q in questions]
    full = greedy_answers(base.model, base.tokenizer, prompts, max_new_tokens=8, batch_size=1)
    assert [a.guess for a in cached] == [g.guess for g in full]
    assert [a.confidence for a in cached] == pytest.approx([g.p for g in full], abs=1e-3)
    assert [a.prompt_tokens for a in cached] == [g.prompt_tokens for g in full]


def test_icl_completion_continues_the_prompt_after_the_corpus(base):
    documents = [("Team", TEXT)]
    prompts = ["Priya Raman has served as chief financial officer since", "Employees receive"]
    icl = System(Mode.ICL, base.tokenizer, base.model, corpus=documents)
    cached = icl.answer(prompts, completion=True, max_new_tokens=8)
    full = greedy_answers(base.model, base.tokenizer, [completion_prompt(p, documents) for p in prompts], 8, 1)
    assert [(a.guess, a.prompt_tokens) for a in cached] == [(g.guess, g.prompt_tokens) for g in full]
    assert [a.confidence for a in cached] == pytest.approx([g.p for g in full], abs=1e-3)


def test_icl_refuses_a_corpus_larger_than_the_window(base):
    window = base.model.config.max_position_embeddings
    refusal = f"does not fit the model's {window}-token context window with its answer: use --mode rag"
    with pytest.raises(ImprintError, match=refusal):
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


def test_system_open_loads_what_the_mode_needs(ws, monkeypatch, tmp_path):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    system = System.open(ws, "rag", model="tiny")
    assert system.retriever is not None and system.corpus is None and system.name == "rag"
    assert system.collection == "default" and system.calibration.report == {"calibrated": False}
    assert len(system(["Who is the CFO?"], max_new_tokens=3)) == 1
    icl = System.open(ws, "icl", model="tiny", loaded=(system.model, system.tokenizer, None))
    assert icl.model is system.model and icl.corpus == [("Team", TEXT)]  # weights reused, not reloaded
    with pytest.raises(ImprintError, match="needs a module"):
        System.open(ws, "module+rag", model="tiny")
    with pytest.raises(ImprintError, match="needs documents"):
        System.open(Workspace.open(tmp_path / "empty"), "rag", model="tiny")
    with pytest.raises(ImprintError, match="unknown mode 'oracle'"):
        System.open(ws, "oracle", model="tiny")


def test_every_prompt_is_checked_against_the_window_as_decoded(base, ws):
    """The check reads the prompt with its passages (what is decoded), not the bare question."""
    rag = System(Mode.RAG, base.tokenizer, base.model, retriever=Retriever.open(ws))
    with_passages = len(rag.plan(["Who is the CFO?"]).rows[0].prompt_ids)
    closed = len(base.tokenizer(qa_prompt("Who is the CFO?")).input_ids)
    rag.max_context = closed + 30  # room for the question and its answer, not for the passages
    assert with_passages > rag.max_context
    with pytest.raises(ContextTooLong, match=f"maximum context length is {closed + 30} tokens"):
        rag.plan(["Who is the CFO?"], max_new_tokens=24)
    closed_book = System(Mode.BASE, base.tokenizer, base.model, max_context=closed + 30)
    assert len(closed_book.plan(["Who is the CFO?"], max_new_tokens=24).rows) == 1


def test_module_rag_decodes_its_closed_book_rows_in_the_same_plan(base, ws):
    system = System(Mode.MODULE_RAG, base.tokenizer, base.model, "m@1", retriever=Retriever.open(ws))
    plan = system.plan(["Who is the CFO?", "How many days of leave?"], max_new_tokens=5)
    assert len(plan.rows) == 4  # two answers with passages, then the same two closed book
    assert plan.rows[2].prompt_ids == base.tokenizer(qa_prompt("Who is the CFO?")).input_ids
    assert all(r.sampling.greedy and r.answer for r in plan.rows)


def test_a_module_system_uses_the_modules_weights_collection_label_and_calibration_key(base, tmp_path):
    """A module trained on collection `hr` answers from `hr` (the default collection is empty), is labelled and
    calibrated as `name@version`, and passes `k` on to retrieval."""
    from imprint import registry

    ws = Workspace.open(tmp_path / "ws")
    ws.put_document("/docs/team.md", "Team", TEXT, chunk_text(TEXT, lambda s: len(s.split()), max_tokens=12), "hr")
    method = registry.method("lora")()
    model = method.attach(copy.deepcopy(base.model), method.config_class(r=4))
    directory = ws.module_dir("m", 1)
    directory.mkdir(parents=True)
    manifest = {"name": "m", "version": 1, "method": "lora", "base_model": "tiny", "collection": "hr",
                "files": method.save(model, directory)}  # fmt: skip
    ws.register_module("m", 1, "lora", "tiny", str(directory), ws.corpus_version("hr"), manifest, "hr")

    system = System.open(ws, "module+rag", "m", model="tiny", k=1)
    assert (system.module, system.collection, system.name) == ("m@1", "hr", "module+rag:m@1")
    assert any("lora_" in name for name, _ in system.model.named_parameters())  # the module, not the bare base
    (answer,) = system(["Who is the CFO?"], max_new_tokens=3)
    assert answer.module == "m@1" and len(answer.evidence) == 1  # k=1 reached the retriever
    assert {e["doc_id"] for e in answer.evidence} == {ws.documents(collection="hr")[0].id}
    assert System.open(ws, "rag", model="tiny", collection="hr").name == "rag"
    with pytest.raises(ImprintError, match=r"collection 'none' has none \(run `imprint add PATH --collection none`\)"):
        System.open(ws, "rag", model="tiny", collection="none")


def test_confidence_is_the_geometric_mean_over_the_answers_own_tokens(base):
    """The first as many generated tokens as the answer has: a one-token answer is as sure as its one token, however
    unsure the tokens generated after it (the stop, the rest of a cut answer)."""
    row = answer_row(base.tokenizer, [1, 2], 4)
    assert len(base.tokenizer.encode("a", add_special_tokens=False)) == 1
    row.text, row.logprobs = "a", [math.log(0.5), math.log(0.1), math.log(0.1)]
    assert confidence(base.tokenizer, row) == pytest.approx(0.5)
    row.text = ""
    assert confidence(base.tokenizer, row) == 0.0


def test_greedy_answers_report_progress(base):
    seen = []
    prompts = [qa_prompt("Who is the CFO?"), qa_prompt("Where is the office?")]
    answers = greedy_answers(base.model, base.tokenizer, prompts, 3, progress=lambda done, total: seen.append(total))
    assert len(answers) == 2 and seen and seen[-1] == 2


def test_greedy_answers_stop_at_the_models_own_end_of_turn_tokens(base):
    """Besides EOS, the ids the model's generation config lists end an answer (Gemma's <end_of_turn>): here the
    tiny model's first answer token is declared one, so the answer ends before it starts."""
    prompt = [qa_prompt("Who is the CFO?")]
    (plain,) = greedy_answers(base.model, base.tokenizer, prompt, 4)
    assert plain.guess
    model = copy.deepcopy(base.model)
    first = base.tokenizer.encode(plain.guess, add_special_tokens=False)[0]
    model.generation_config.eos_token_id = [base.tokenizer.eos_token_id, first]
    (stopped,) = greedy_answers(model, base.tokenizer, prompt, 4)
    assert stopped.guess == ""
