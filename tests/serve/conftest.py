"""A tiny-model workspace with real trained modules of every method, and real servers on 127.0.0.1."""

import json

import openai
import pytest
import torch

from imprint import pipeline, registry
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.testing import tiny_lm, tiny_tokenizer
from imprint.workspace import Workspace

CORPUS = (
    "# Team\n\nPriya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year. The Lisbon office opened in 2021.\n"
)


def _register(ws, name: str, method: str, settings: dict, seed: int) -> None:
    """A module made with the method's own attach/save and randomised weights (strong, distinct effects, and no
    training time), registered as `imprint train` registers one."""
    impl = registry.method(method)()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = impl.attach(tiny_lm()[0], impl.config_class(**settings), tiny_tokenizer(), CORPUS)
        with torch.no_grad():
            for param_name, p in model.named_parameters():
                if method != "lora" or "lora_B" in param_name:  # LoRA B starts at zero: give it a real update
                    p.add_(torch.randn_like(p) * (0.3 if method == "lora" else 0.05))
    version = ws.next_module_version(name)
    directory = ws.module_dir(name, version)
    directory.mkdir(parents=True)
    files = impl.save(model, directory)
    size = sum((directory / f).stat().st_size for f in files)
    manifest = {"name": name, "version": version, "method": method, "base_model": "tiny", "files": files,
                "corpus_version": ws.corpus_version(), "config": {method: settings}, "metrics": {},
                "module_bytes": size, "created_at": pipeline.now()}  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest))
    ws.register_module(name, version, method, "tiny", str(directory), manifest["corpus_version"], manifest)


@pytest.fixture(scope="session")
def ws_dir(tmp_path_factory):
    """Modules on `tiny`: alpha@1 (trained by the real pipeline), alpha@2 and beta (LoRA), cart (prefix), whole
    (full), mem (memory layers), the last five with random weights."""
    root = tmp_path_factory.mktemp("serve-ws")
    (root / "team.md").write_text(CORPUS)
    ws = Workspace.open(root / "ws")
    pipeline.add(ws, [str(root / "team.md")], model="tiny")
    dataset = pipeline.synth(ws, "rules")["name"]
    train = {"epochs": 1, "lr": 1e-2, "checkpoint_every": 0, "verify": False, "replay": 0, "read": 0}  # serving
    overrides = {"train": train, "lora": {"r": 4, "alpha": 8}}
    pipeline.train_module(ws, [dataset], "alpha", "lora", model="tiny", overrides=overrides)
    _register(ws, "alpha", "lora", {"r": 4, "alpha": 8}, seed=1)
    _register(ws, "beta", "lora", {"r": 8, "alpha": 8, "target_modules": "q_proj,v_proj,down_proj"}, seed=2)
    _register(ws, "cart", "prefix", {"n_tokens": 6, "init": "random"}, seed=3)
    _register(ws, "whole", "full", {}, seed=4)
    memory = {"n_keys": 16, "heads": 2, "knn": 8, "key_dim": 16, "background": str(root / "team.md")}
    _register(ws, "mem", "memory", memory, seed=5)
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
