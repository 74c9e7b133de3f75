"""The `imprint` extension: answers with retrieval (rag, module+rag) or closed-book with evidence, through
`imprint.answer`, so the server answers exactly as `imprint ask` does, with the evidence in the response."""

import httpx
import pytest
from team_facts import CFO, answer

from imprint.system import System
from imprint.workspace import Workspace

QUESTION = "How many days of paid annual leave do employees receive?"


def _ask(client, model, stream=False, **options):
    messages = [{"role": "user", "content": QUESTION}]
    return client.chat.completions.create(model=model, messages=messages, max_tokens=24, stream=stream,
                                          extra_body={"imprint": options})  # fmt: skip


@pytest.mark.parametrize("model, mode", [("tiny", "rag"), ("alpha", "module+rag"), ("cart", "module+rag")])
def test_retrieval_answers_as_imprint_ask_does_with_evidence(client, ws_dir, model, mode):
    out = _ask(client, model, retrieval=True, k=2)
    info = out.model_extra["imprint"]
    assert info["mode"] == mode and info["module"] == (
        None if model == "tiny" else f"{model}@{2 if model == 'alpha' else 1}"
    )
    assert len(info["evidence"]) == 1  # the corpus is one chunk
    assert "27 days" in info["evidence"][0]["quote"] and info["evidence"][0]["doc_id"].startswith("d")
    module = None if model == "tiny" else model
    expected = System.open(Workspace.open(ws_dir), mode, module, model="tiny", k=2)([QUESTION])
    assert out.choices[0].message.content == expected[0].answer
    assert info["confidence"] == expected[0].confidence and info["abstained"] == expected[0].abstained


def test_closed_book_answer_with_evidence_and_streaming(client):
    # alpha@1 learned the corpus's CFO, beta another name: the evidence backs the first and not the second
    for model, supported in (("alpha@1", True), ("beta", False)):
        messages = [{"role": "user", "content": CFO}]
        closed = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                                extra_body={"imprint": {"evidence": True}})  # fmt: skip
        info = closed.model_extra["imprint"]
        assert closed.choices[0].message.content == answer(model) and info["mode"] == "module"
        assert info["supported"] is supported and "Priya Raman" in info["evidence"][0]["quote"]
    chunks = list(_ask(client, "tiny", stream=True, retrieval=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _ask(client, "tiny", retrieval=True).choices[0].message.content
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final[0].model_extra["imprint"]["evidence"]


def test_retrieval_refuses_what_it_cannot_answer(server):
    body = {"model": "tiny", "imprint": {"retrieval": True}}
    two = [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c?"}]
    for extra, param in [({"messages": two}, "messages"), ({"messages": two[:1], "n": 2}, "n"),
                         ({"messages": two[:1], "imprint": {"retrieval": True, "k": 0}}, "imprint.k")]:  # fmt: skip
        response = httpx.post(f"{server.url}/chat/completions", json={**body, **extra})
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    response = httpx.post(
        f"{server.url}/completions", json={"model": "tiny", "prompt": "x", "imprint": {"retrieval": True}}
    )
    assert response.status_code == 400
