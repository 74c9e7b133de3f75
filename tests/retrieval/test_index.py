"""The hybrid index on a real workspace: it finds the right chunk, and follows the corpus incrementally."""

import pytest

from imprint.ingest import chunk_text
from imprint.retrieval import RetrievalConfig, Retriever, best_sentences, quote_sentences
from imprint.workspace import Workspace

DOCS = {
    "leave.md": (
        "Leave policy",
        "Employees receive 27 days of paid annual leave. Unused leave carries over until the end of March. "
        "Parents receive 16 weeks of parental leave at full pay.",
    ),
    "security.md": (
        "Security",
        "Passwords must be at least 14 characters long. Laptops lock after five minutes without use. "
        "Report phishing emails to the security desk.",
    ),
    "offices.md": (
        "Offices",
        "The Rotterdam office opened in May 2015 in the Katendrecht district. "
        "The Halifax office has 61 employees and a rooftop weather station.",
    ),
}


def put(ws, name, title, text):
    chunks = chunk_text(text, lambda s: len(s.split()), max_tokens=25)
    return ws.put_document(f"/docs/{name}", title, text, chunks)


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    for name, (title, text) in DOCS.items():
        put(ws, name, title, text)
    return ws


def stored_ids(retriever):
    return retriever.store.ids()


@pytest.mark.parametrize("store", ["sqlite-vec", "qdrant"])
def test_finds_the_chunk_that_answers(ws, store):
    retriever = Retriever.open(ws, RetrievalConfig(store=store, k=2))
    hits = retriever.search("How many characters does a password need?")
    assert hits[0].title == "Security" and "14 characters" in hits[0].text
    assert hits[0].score >= hits[-1].score and 0 < hits[0].dense <= 1 and hits[0].bm25 > 0
    # a paraphrase with no shared keyword is still found by the dense side
    assert retriever.search("time off for new mothers and fathers", k=1)[0].title == "Leave policy"
    quote, cos = best_sentences("How long must a password be?", hits[:1])[0]
    assert quote.startswith("Passwords must be at least 14") and cos > 0.5
    retriever.close()


def test_batched_quotes_match_one_by_one(ws):
    """Evidence of many answers is quoted in one embedding pass; each quote is the one a lone lookup finds."""
    retriever = Retriever.open(ws, RetrievalConfig(k=3))
    questions = ["How long must a password be?", "When did the Rotterdam office open?", "How much parental leave?"]
    requests = [([q, f"{q} answer"], retriever.search(q)) for q in questions]
    batched = quote_sentences(requests)
    for (queries, hits), per_query in zip(requests, batched, strict=True):
        for query, quotes in zip(queries, per_query, strict=True):
            alone = best_sentences(query, hits)
            assert [q for q, _ in quotes] == [q for q, _ in alone]
            assert [c for _, c in quotes] == pytest.approx([c for _, c in alone], abs=1e-5)
    assert batched[1][0][0][0].startswith("The Rotterdam office opened")
    retriever.close()


@pytest.mark.parametrize("store", ["sqlite-vec", "qdrant"])
def test_index_follows_added_changed_and_removed_documents(ws, store):
    config = RetrievalConfig(store=store)
    retriever = Retriever.open(ws, config)
    assert stored_ids(retriever) == {c.id for c in ws.chunks()}
    retriever.close()

    put(ws, "security.md", "Security", "Passwords must be at least 20 characters long. Laptops lock quickly.")
    ws.remove_document("/docs/offices.md")
    put(ws, "travel.md", "Travel", "Hotel costs are capped at 180 euros per night in most cities.")
    retriever = Retriever.open(ws, config)
    current = {c.id for c in ws.chunks()}
    assert stored_ids(retriever) == current  # no stale chunk of the old version or the removed document
    assert len(retriever) == len(current)
    texts = " ".join(h.text for h in retriever.search("password length", k=10))
    assert "20 characters" in texts and "14 characters" not in texts
    assert all(h.title != "Offices" for h in retriever.search("Rotterdam office Katendrecht", k=10))
    assert retriever.search("hotel cost per night", k=1)[0].title == "Travel"
    retriever.close()

    retriever = Retriever.open(ws, config)  # reopening an unchanged corpus changes nothing
    assert stored_ids(retriever) == current
    retriever.close()


def test_empty_and_stopword_queries(tmp_path, ws):
    empty = Retriever.open(Workspace.open(tmp_path / "empty"))
    assert empty.search("anything") == [] and len(empty) == 0
    retriever = Retriever.open(ws)
    assert retriever.search("   ") == []
    assert len(retriever.search("what is the")) > 0  # dense side still answers a query of stopwords only
    with pytest.raises(ValueError, match="retrieval.store"):
        RetrievalConfig(store="faiss")
