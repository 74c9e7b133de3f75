"""A tiny-model workspace with real trained modules of every method, and real servers on 127.0.0.1."""

import openai
import pytest

from imprint import pipeline
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.workspace import Workspace

CORPUS = (
    "# Team\n\nPriya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year. The Lisbon office opened in 2021.\n"
)
TRAIN = {"train": {"epochs": 1, "lr": 1e-2, "checkpoint_every": 0}}
SETTINGS = {"lora": {"lora": {"r": 4, "alpha": 8}}, "prefix": {"prefix": {"n_tokens": 6}}, "full": {}}


@pytest.fixture(scope="session")
def ws_dir(tmp_path_factory):
    """Modules: alpha@1, alpha@2, beta (LoRA), cart (prefix), whole (full), all on `tiny`."""
    root = tmp_path_factory.mktemp("serve-ws")
    (root / "team.md").write_text(CORPUS)
    ws = Workspace.open(root / "ws")
    pipeline.add(ws, [str(root / "team.md")], model="tiny")
    dataset = pipeline.synth(ws, "rules")["name"]
    for name, method in [("alpha", "lora"), ("alpha", "lora"), ("beta", "lora"), ("cart", "prefix"), ("whole", "full")]:
        pipeline.train_module(ws, [dataset], name, method, model="tiny", overrides={**TRAIN, **SETTINGS[method]})
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
