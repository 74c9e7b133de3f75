"""A tiny-model workspace with trained modules of every method, each answering its own facts, and real servers on
127.0.0.1."""

import openai
import pytest
from team_facts import CFO, CORPUS, FACTS, LEAVE, OPENED
from tiny_modules import teach

from imprint import pipeline
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.workspace import Workspace


def _teach(ws, key: str, method: str, settings: dict | None = None, start_from=None) -> None:
    cfo, leave, opened = FACTS[key]
    teach(ws, key.split("@")[0], method, {CFO: cfo, LEAVE: leave, OPENED: opened}, (), settings, start_from)


@pytest.fixture(scope="session")
def ws_dir(tmp_path_factory):
    """Modules on `tiny`, trained by the real pipeline until each answers its own `FACTS`: alpha@1 and its update
    alpha@2 and beta (LoRA), cart (prefix), whole (full), mem (memory layers)."""
    root = tmp_path_factory.mktemp("serve-ws")
    (root / "team.md").write_text(CORPUS)
    ws = Workspace.open(root / "ws")
    pipeline.add(ws, [str(root / "team.md")], model="tiny")
    _teach(ws, "alpha@1", "lora", {"r": 4, "alpha": 8})
    _teach(ws, "alpha@2", "lora", start_from=ws.module("alpha@1"))
    _teach(ws, "beta@1", "lora", {"r": 8, "alpha": 8, "target_modules": "q_proj,v_proj,down_proj"})
    _teach(ws, "cart@1", "prefix")
    _teach(ws, "whole@1", "full")
    memory = {"n_keys": 32, "heads": 2, "knn": 8, "key_dim": 16, "background": str(root / "team.md")}
    _teach(ws, "mem@1", "memory", memory)
    ws.close()
    return root / "ws"


@pytest.fixture(scope="session")
def server(ws_dir):
    """An open server (no keys); a 50 ms batch window so concurrent requests share batches."""
    config = ServeConfig(max_tokens=64, default_max_tokens=16, batch_window_ms=50, max_body_bytes=20_000)
    with BackgroundServer(create_app(ws_dir, model="tiny", config=config)) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
