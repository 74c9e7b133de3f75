"""The module cache: loaded on first use, least recently used unloaded to stay under the byte budget, modules of a
running batch never evicted, full fine-tunes counted as whole models; through the server, a budget smaller than
the modules in use still answers every request."""

import json
from pathlib import Path

import httpx
import openai
import pytest
from team_facts import CFO, answer

from imprint.inference.modules import ModuleHost
from imprint.methods import loading
from imprint.models import load_base
from imprint.prompts import qa_prompt
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.serve.modules import ModuleCache, ModuleTooLarge
from imprint.workspace import Workspace


def _modules(ws_dir):
    return {f"{m.name}@{m.version}": (m.method, Path(m.path)) for m in Workspace.open(ws_dir).modules()}


def _lora_bytes(ws_dir, key):
    return json.loads((Path(_modules(ws_dir)[key][1]) / "manifest.json").read_text())["module_bytes"]


def test_lru_under_the_budget(ws_dir):
    modules = _modules(ws_dir)
    base = load_base("tiny")
    sizes = {k: loading.serving_bytes(ModuleHost(base), *modules[k]) for k in ("alpha@1", "alpha@2", "beta@1")}
    cache = ModuleCache(base, budget_bytes=sizes["alpha@1"] + max(sizes["alpha@2"], sizes["beta@1"]) + 100)
    for key in ("alpha@1", "alpha@2"):
        cache.get(key, *modules[key])
    cache.get("alpha@1", *modules["alpha@1"])  # touch: alpha@2 is now the least recently used
    cache.get("beta@1", *modules["beta@1"])
    assert list(cache.loaded) == ["alpha@1", "beta@1"] and cache.evictions == 1
    assert cache.used <= cache.budget
    # the adapter really left the model: no layer holds alpha@2's update any more
    held = {name for layer in cache.bank.layers.values() for name in layer.updates}
    assert held == {cache.loaded["alpha@1"].adapter, cache.loaded["beta@1"].adapter}
    # modules the running batch pinned are never evicted, even when that means refusing a third one
    with pytest.raises(ModuleTooLarge) as refused:
        cache.get("alpha@2", *modules["alpha@2"], pinned={"alpha@1", "beta@1"})
    assert refused.value.fits_alone and list(cache.loaded) == ["alpha@1", "beta@1"]


def test_full_fine_tunes_count_as_whole_models(ws_dir):
    modules = _modules(ws_dir)
    base = load_base("tiny")
    model_bytes = sum(p.numel() for p in base.model.parameters()) * 4  # fp32 copy
    with pytest.raises(ModuleTooLarge) as refused:
        ModuleCache(base, budget_bytes=model_bytes // 2).get("whole@1", *modules["whole@1"])
    assert not refused.value.fits_alone and "--max-loaded-mb" in str(refused.value)
    cache = ModuleCache(base, budget_bytes=model_bytes * 3)
    loaded = cache.get("whole@1", *modules["whole@1"])
    assert loaded.model is not None and loaded.model is not base.model and loaded.nbytes >= model_bytes
    prefix = cache.get("cart@1", *modules["cart@1"])
    assert prefix.prefix is not None and 0 < prefix.nbytes < model_bytes


def test_server_cycles_modules_through_a_small_budget(ws_dir):
    size = max(_lora_bytes(ws_dir, k) for k in ("alpha@1", "alpha@2", "beta@1"))
    config = ServeConfig(max_loaded_mb=size * 1.5 / 2**20, max_tokens=16, default_max_tokens=4)
    with BackgroundServer(create_app(ws_dir, model="tiny", config=config)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
        texts = {}
        for model in ["alpha@1", "alpha@2", "beta", "alpha@1", "alpha@2"]:
            out = client.completions.create(model=model, prompt=qa_prompt(CFO), temperature=0, max_tokens=16)
            texts.setdefault(model, set()).add(out.choices[0].text)
        # reloading a module gives the same answer, its own: each module answers its own fact
        assert texts == {model: {f" {answer(model)}"} for model in ("alpha@1", "alpha@2", "beta")}
        stats = httpx.get(f"{server.root}/v1/imprint/stats").json()["modules"]
        assert stats["loaded"] == 1 and stats["evictions"] >= 4 and stats["used_bytes"] <= stats["budget_bytes"]
        with pytest.raises(openai.InternalServerError) as refused:  # a full copy can never fit: 503, clear message
            client.completions.create(model="whole", prompt="Who?", max_tokens=2)
        assert refused.value.status_code == 503 and "--max-loaded-mb" in refused.value.message
