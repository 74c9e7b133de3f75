"""Generated eval questions: parsed, answerable from their chunk, worded apart from it, and kept out of training."""

import json
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI

from imprint.cli import main
from imprint.evaluate.evalset import load_eval_set
from imprint.evaluate.generate import generate_eval_items, parse_question, write_generated
from imprint.evaluate.metrics import normalize
from imprint.synth.generators.scripted import ScriptedGenerator
from imprint.system import System
from imprint.workspace import Workspace

DOCS = {
    "team.md": "# Team\n\nPriya Raman has served as chief financial officer since March 2019.\n",
    "leave.md": "# Leave\n\nEmployees receive 27 days of paid annual leave per year.\n",
    "office.md": "# Office\n\nThe Rotterdam office opened in 2016 in the Kop van Zuid district.\n",
}


def script(prompt: str) -> str:
    """Plays the generator: one good question per passage, one copy of the text, one unanswerable, one garbled."""
    if "Priya Raman" in prompt:
        return " Who looks after the company's money?\nAnswer: Priya Raman"
    if "27 days" in prompt:
        return " Employees receive how many days of paid annual leave per year?\nAnswer: 27 days"  # copies the chunk
    if "Rotterdam" in prompt:
        return " When did the Dutch site open its doors?\nAnswer: 2017"  # not what the chunk says
    return "I could not think of a question"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    assert main(["add", str(docs)]) == 0
    return Workspace.open(tmp_path / "ws")


@pytest.mark.parametrize(
    ("completion", "parsed"),
    [
        (" Who is the CFO?\nAnswer: Priya Raman.", ("Who is the CFO?", "Priya Raman")),
        ("Who is the CFO?\n\nAnswer:  March 2019\nQuestion: more", ("Who is the CFO?", "March 2019")),
        ("Who is the CFO\nAnswer: x", None),  # not a question
        ("Who is the CFO?", None),
    ],
)
def test_parse_question(completion, parsed):
    assert parse_question(completion) == parsed


def test_only_answerable_reworded_questions_are_kept(ws):
    generator = ScriptedGenerator(script)
    items, rejected = generate_eval_items(ws, generator, n=3)
    assert [(i.question, i.answers) for i in items] == [("Who looks after the company's money?", ("Priya Raman",))]
    assert rejected == {"unparsed": 0, "answer_not_in_chunk": 1, "copies_the_chunk": 1, "duplicate": 0}
    assert items[0].doc_ids == (next(d.id for d in ws.documents() if d.title == "Team"),)
    assert all("Passage from" in p and "Question:" in p for p in generator.prompts)
    path = write_generated(ws, items)
    assert path.parent == ws.root / "evalsets" and load_eval_set(path)[0].question == items[0].question


def writer_app() -> FastAPI:
    """An OpenAI-compatible completions endpoint that writes what `script` writes (the external generator)."""
    app = FastAPI()

    @app.post("/v1/completions")
    def complete(body: dict):
        text = script(body["prompt"])
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice]}

    return app


def test_eval_generates_questions_over_http_then_scores_them(ws, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(writer_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        args = ["eval", "--generate-questions", "3", "--base-url", url, "--generator-model", "writer"]
        assert main([*args, "--systems", "base", "--retention-samples", "2", "--json"]) == 0
    finally:
        server.should_exit = True
        thread.join(5)
    out = capsys.readouterr().out
    assert "generated 1 eval questions" in out
    assert json.loads(out.splitlines()[-1])["base"]["n"] == 1
    card = json.loads(next((ws.root / "reports").glob("*/scorecard.json")).read_text())
    assert card["eval_sets"][0].startswith(str(ws.root / "evalsets" / "generated-"))
    assert card["leakage"]["ok"]
    # the generated question is scored against the generated answer, on what the base model says to it
    (row,) = card["systems"][0]["rows"]
    assert row["question"] == "Who looks after the company's money?" and row["gold"] == ["Priya Raman"]
    said = System.open(ws, "base", model="tiny")([row["question"]])[0].generated
    assert row["answer"] == said and not set(normalize(said).split()) & {"priya", "raman"}
    assert (row["em"], row["f1"], row["contained"]) == (0.0, 0.0, 0.0)
