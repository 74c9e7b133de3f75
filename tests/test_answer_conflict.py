"""module+rag against its own closed-book answer: a module fact the retrieved passages do not say is flagged, and
the passages win (tiny model, real retrieval index)."""

import pytest

from imprint.answer import _conflict, answer_questions
from imprint.ingest import chunk_text
from imprint.models import load_base
from imprint.retrieval import Retriever
from imprint.retrieval.index import Hit
from imprint.workspace import Workspace

TEXT = "Employees receive 29 days of paid annual leave per year. The Halifax office has 61 employees."


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


@pytest.fixture(scope="module")
def base():
    return load_base("tiny")


def test_module_rag_answers_carry_the_closed_book_answer_and_the_evidence_wins(base, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    ws.put_document("/docs/leave.md", "Leave", TEXT, chunk_text(TEXT, lambda s: len(s.split()), max_tokens=12))
    questions = ["How many days of leave?", "How many people work in Halifax?", "Who is the CFO?"]
    args = (base.model, base.tokenizer, questions)
    closed = answer_questions(*args, "module", max_new_tokens=6)
    answers = answer_questions(*args, "module+rag", retriever=Retriever.open(ws), max_new_tokens=6)
    for a, c in zip(answers, closed, strict=True):
        assert a.conflict["closed_book"] == c.answer  # the same weights, closed book: the same greedy answer
        overruled = a.conflict["flagged"] and a.conflict["answer_is_closed_book"]
        assert a.answer == (a.evidence[0]["quote"] if overruled else a.guess)
        assert a.to_dict()["conflict"] == a.conflict
    rag = answer_questions(*args, "rag", retriever=Retriever.open(ws), max_new_tokens=6)
    assert all(a.conflict is None for a in rag + closed)  # only module+rag compares the two
