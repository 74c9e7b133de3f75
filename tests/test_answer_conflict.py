"""module+rag against its own closed-book answer: a module fact the retrieved passages do not say is flagged, the
answer shown to the user follows the passages (labelled `overridden`), and evaluation scores what the model wrote,
with the quote scored apart (tiny model, real retrieval index)."""

import pytest

from imprint.answer import ABSTAIN_TEXT, Generated, _conflict, make_answers
from imprint.answer.calibration import Calibration
from imprint.evaluate.evalset import EvalItem
from imprint.evaluate.run import _open_rows, learned_metrics
from imprint.ingest import chunk_text
from imprint.models import load_base
from imprint.retrieval import Retriever
from imprint.retrieval.index import Hit
from imprint.system import answer_questions
from imprint.workspace import Workspace

TEXT = "Employees receive 29 days of paid annual leave per year. The Halifax office has 61 employees."
QUESTION = "How many days of paid annual leave do employees receive?"


def _hit(text: str) -> Hit:
    return Hit("d1", "Leave", "d1:v2:0", text, 0.5, 0.5, 1.0)


def test_a_closed_book_answer_the_passages_do_not_say_is_flagged():
    stale = _conflict("27 days", "27 days", [_hit(TEXT)])  # the module's old value, repeated with the passages
    assert stale == {"closed_book": "27 days", "support": 0.5, "flagged": True, "answer_is_closed_book": True}
    adopted = _conflict("27 days", "29 days", [_hit(TEXT)])  # the passages changed the answer
    assert adopted["flagged"] and not adopted["answer_is_closed_book"]
    agreed = _conflict("29 days", "29 days", [_hit(TEXT)])
    assert not agreed["flagged"] and agreed["support"] == 1.0
    assert not _conflict("", "29 days", [_hit(TEXT)])["flagged"]  # nothing said closed book: nothing to flag
    assert not _conflict("::::", "::::", [_hit(TEXT)])["flagged"]  # punctuation says nothing either


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("conflict") / "ws")
    ws.put_document("/docs/leave.md", "Leave", TEXT, chunk_text(TEXT, lambda s: len(s.split()), max_tokens=12))
    return Retriever.open(ws)


def _answer(retriever, guess: str, closed_book: str | None, calibration=None, with_evidence: bool = True):
    """One module+rag answer built by the real `make_answers` from a given generation and closed-book answer."""
    hits = [retriever.search(QUESTION)] if with_evidence else [[]]
    generated = [Generated(guess, 0.9, 40, 1.0)]
    closed = None if closed_book is None else [closed_book]
    return make_answers(generated, [QUESTION], hits, [0.0], "module+rag", "m@1",
                        retriever if with_evidence else None, calibration, None, closed)[0]  # fmt: skip


def test_a_stale_closed_book_answer_repeated_with_the_passages_is_overridden_and_labelled(retriever):
    a = _answer(retriever, "27 days", "27 days")
    assert a.conflict["flagged"] and a.overridden
    assert a.answer == a.evidence[0]["quote"] != "27 days"  # the user is shown the passage
    assert a.generated == a.guess == "27 days"  # what the model wrote is kept, and is what eval scores
    assert a.record()["overridden"] is True


def test_an_answer_the_passages_changed_is_kept(retriever):
    a = _answer(retriever, "29 days", "27 days")
    assert a.conflict["flagged"] and not a.conflict["answer_is_closed_book"]
    assert not a.overridden and a.answer == a.generated == "29 days"


def test_an_answer_the_passages_back_is_neither_flagged_nor_overridden(retriever):
    a = _answer(retriever, "29 days", "29 days")
    assert not a.conflict["flagged"] and not a.overridden and a.answer == "29 days"


def test_abstention_comes_before_the_override(retriever):
    never = {"mean": [0, 0, 0], "scale": [1, 1, 1], "weights": [0, 0, 0, -10.0]}  # P(answerable) ~ 0.00005
    a = _answer(retriever, "27 days", "27 days", calibration=Calibration("module+rag", None, never, 0.5, {}))
    assert a.abstained and not a.overridden
    assert a.answer == a.generated == ABSTAIN_TEXT and a.guess == "27 days"


def test_no_evidence_means_no_override(retriever):
    a = _answer(retriever, "27 days", "27 days", with_evidence=False)
    assert a.conflict["flagged"] and a.evidence == [] and not a.overridden and a.answer == "27 days"


def test_a_punctuation_only_answer_is_not_overridden(retriever):
    a = _answer(retriever, "::::", "::::")
    assert not a.conflict["flagged"] and not a.overridden and a.answer == "::::"


def test_an_answer_is_supported_when_the_passages_hold_at_least_half_its_content_words(retriever):
    backed, half, made_up = (_answer(retriever, guess, None) for guess in ("29 days", "29 weeks", "Lisbon branch"))
    assert backed.supported is True and backed.signals["support"] == 1.0
    assert half.supported is True and half.signals["support"] == 0.5  # "29" is in the passage, "weeks" is not
    assert made_up.supported is False and made_up.signals["support"] == 0.0
    assert backed.conflict is None and not backed.overridden  # without a closed-book answer nothing is compared


def test_eval_scores_what_the_model_wrote_and_the_quote_apart(retriever):
    """A wrong stale answer stays wrong in the scored columns however much the quote that replaced it holds."""
    overridden = _answer(retriever, "27 days", "27 days")
    kept = _answer(retriever, "29 days", "29 days")
    items = [EvalItem("q1", QUESTION, ("29 days",)), EvalItem("q2", QUESTION, ("29 days",))]
    rows = _open_rows(items, [overridden, kept])
    assert rows[0]["answer"] == "27 days" and rows[0]["overridden"]
    assert (rows[0]["em"], rows[0]["f1"], rows[0]["contained"]) == (0.0, 0.5, 0.0)  # "days" is the one shared word
    assert rows[0]["override"]["answer"] == overridden.answer and rows[0]["override"]["contained"] == 1.0
    assert rows[1]["override"] is None and rows[1]["em"] == 1.0
    learned = learned_metrics(rows, [])
    assert learned["answer_contained"] == 0.5 and learned["exact_match"] == 0.5  # the model's own answers
    assert learned["with_override"]["n_overridden"] == 1 and learned["with_override"]["answer_contained"] == 1.0
    assert learned_metrics(_open_rows(items[:1], [kept]), [])["with_override"]["n_overridden"] == 0


@pytest.fixture(scope="module")
def base():
    return load_base("tiny")


def test_module_rag_answers_carry_the_closed_book_answer(base, retriever):
    questions = [QUESTION, "How many people work in Halifax?", "Who is the CFO?"]
    args = (base.model, base.tokenizer, questions)
    closed = answer_questions(*args, "module", max_new_tokens=6)
    answers = answer_questions(*args, "module+rag", retriever=retriever, max_new_tokens=6)
    for a, c in zip(answers, closed, strict=True):
        assert a.conflict["closed_book"] == c.answer  # the same weights, closed book: the same greedy answer
        assert a.to_dict()["conflict"] == a.conflict
    rag = answer_questions(*args, "rag", retriever=retriever, max_new_tokens=6)
    assert all(a.conflict is None and not a.overridden for a in rag + closed)  # only module+rag compares the two


OFFICES = (
    "The Austin office is managed by Dana Whitfield, who joined in 2019. It has 40 employees. "
    "Marcus Bell is the chief financial officer of the company. He reports to the board. "
    "The Lisbon office opened in 2021 and is managed by Rui Costa."
)


@pytest.fixture(scope="module")
def offices(tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("offices") / "ws")
    ws.put_document("/docs/offices.md", "Offices", OFFICES, chunk_text(OFFICES, lambda s: len(s.split()), 400))
    return Retriever.open(ws)


@pytest.mark.parametrize("mode", ["rag", "base"])
def test_a_wrong_answer_whose_words_occur_elsewhere_in_the_corpus_is_not_supported(offices, mode):
    """Asked who manages the Austin office, "Marcus Bell" occurs in the very passage the evidence shows, but no
    sentence about the question says it: not supported. The right name is."""
    question = "Who manages the Austin office?"
    hits = [offices.search(question)] if mode == "rag" else [None]  # closed book: looked up with the answer
    args = ([question], hits, [0.0], mode, None, offices, None, None)
    wrong = make_answers([Generated("Marcus Bell", 0.7, 30, 1.0)], *args)[0]
    right = make_answers([Generated("Dana Whitfield", 0.7, 30, 1.0)], *args)[0]
    assert "Marcus Bell" in " ".join(h.text for h in offices.search(question))  # the words are in the evidence
    assert wrong.supported is False and wrong.signals["support"] == 1.0  # the old words-anywhere signal says 1.0
    assert right.supported is True


def test_an_answer_in_the_sentence_next_to_the_one_about_the_question_is_supported(offices):
    """In "Marcus Bell is the CFO. He reports to the board." the board question is about the second sentence, and
    the name is in the first."""
    question = "Who reports to the board?"
    hits = [offices.search(question)]
    found = make_answers([Generated("Marcus Bell", 0.7, 30, 1.0)], [question], hits, [0.0], "rag", None, offices,
                         None, None)[0]  # fmt: skip
    assert found.supported is True
