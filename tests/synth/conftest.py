"""Shared fixtures: the tiny model, real OpenAI-compatible servers on 127.0.0.1 (`imprint serve`, and a
fault-injecting test server), and small workspaces."""

from __future__ import annotations

import pytest
import yaml
from synth_http_server import ServerState, create_app, running

from imprint.models import load_base
from imprint.workspace import Workspace

PEOPLE = (
    "# People\n\n"
    "Orla Quennell has been chief executive officer of Tallowby Hydrometrics since 2009. "
    "Hamish Oyelaran-Birch has served as chief financial officer since March 2019. "
    "He approves expenses above 5,000 euros.\n"
)
OFFICES = (
    "# Offices\n\n"
    "Tallowby Hydrometrics has four offices. The head office is in Rotterdam and employs 140 people. "
    "The Bergen office opened in 2015 and builds river sensors. The Lisbon office runs field deployments "
    "for 12 clients. Ines Vathanakul oversees all four sites as chief operating officer.\n"
)


@pytest.fixture(scope="session")
def tiny():
    return load_base("tiny")


@pytest.fixture
def server(tiny):
    """Start a fresh server per test: yields (base_url, state); set state.fail etc. before the first request."""
    state = ServerState()
    with running(create_app(tiny.model, tiny.tokenizer, state)) as url:
        yield url, state


@pytest.fixture
def imprint_server(ws, tiny):
    """`imprint serve` itself (its app factory under uvicorn on 127.0.0.1) serving the tiny model: yields its /v1
    URL. The strategies run against it; `server` above is for the fault-injection transport tests."""
    from imprint.serve import BackgroundServer, create_app

    with BackgroundServer(create_app(ws.root, model="tiny", base=tiny)) as running:
        yield running.url


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "people.md").write_text(PEOPLE)
    (folder / "offices.md").write_text(OFFICES)
    return folder


@pytest.fixture
def ws(tmp_path, corpus):
    """A workspace holding the two small documents, chunked with the tiny (byte) tokenizer."""
    from imprint import pipeline

    workspace = Workspace.open(tmp_path / "ws")
    pipeline.add(workspace, [str(corpus)], model="tiny", max_tokens=200)
    return workspace


@pytest.fixture
def short_templates(tmp_path):
    """The packaged templates with every completion capped at 24 tokens, as a user override folder: the tiny
    model writes random bytes, so longer completions would only make the live tests slower."""
    from imprint.synth.prompting import PACKAGE_DIR

    folder = tmp_path / "templates"
    folder.mkdir()
    for path in PACKAGE_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for prompt in data["prompts"].values():
            prompt["max_tokens"] = 24
        (folder / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return str(folder)
