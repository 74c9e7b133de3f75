"""Workspaces with modules on tiny random models of the architectures imprint exports: the `tiny` Gemma-3 and a
local Llama and Qwen2 directory (each built from a config with imprint's byte tokenizer, saved as a Hugging Face
model directory, so `--model DIR` loads it as it would a real one)."""

import pytest
from export_models import base_dir, register

from imprint.workspace import Workspace


@pytest.fixture(scope="session")
def export_ws(tmp_path_factory):
    """Modules: on `tiny` (Gemma-3) lora `g` and full `gfull`, prefix `gprefix`; on a Llama directory lora `l`
    and full `lfull`; on a Qwen2 directory lora `q`, on a Qwen3 one lora `q3`."""
    root = tmp_path_factory.mktemp("export-ws")
    llama, qwen, qwen3 = (str(base_dir(root, family)) for family in ("llama", "qwen2", "qwen3"))
    ws = Workspace.open(root / "ws")
    lora = {"r": 4, "alpha": 8}
    register(ws, "g", "lora", "tiny", lora, seed=1)
    register(ws, "gfull", "full", "tiny", {}, seed=2)
    register(ws, "gprefix", "prefix", "tiny", {"n_tokens": 4, "init": "random"}, seed=3)
    register(ws, "l", "lora", llama, lora, seed=4)
    register(ws, "lfull", "full", llama, {}, seed=5)
    register(ws, "q", "lora", qwen, lora, seed=6)
    register(ws, "q3", "lora", qwen3, lora, seed=7)
    ws.close()
    return root / "ws"
