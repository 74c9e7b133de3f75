"""`imprint serve --engine vllm`: imprint stays the front door (tenant keys, retrieval, the answer record) while a
vLLM server decodes. vLLM does not install on a CPU machine, so the upstream is `fake_vllm.py`, a real HTTP server
on 127.0.0.1 speaking vLLM's completions API on the same tiny model; the same workspace is served by both engines
and every answer must come back the same, with tenant isolation unchanged. The launch is tested up to the exact
`vllm serve` command, and once end to end with a stand-in `vllm` executable."""

import json
import os
import stat
import sys
from pathlib import Path

import httpx
import openai
import pytest
import torch
from fake_vllm import FakeState
from fake_vllm import create_app as fake_app

from imprint import pipeline, registry
from imprint.cli import main
from imprint.errors import ImprintError
from imprint.inference.rows import ANSWER_STOPS
from imprint.prompts import qa_prompt
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.serve.server import free_port
from imprint.serve.vllm import start_vllm, vllm_command
from imprint.testing import tiny_lm, tiny_tokenizer
from imprint.workspace import Workspace

ACME = "# Acme vault\n\nThe Acme vault PIN is 90210. Acme keeps its spare keys in Springfield.\n"
GLOBEX = "# Globex launch\n\nThe Globex launch code is BLUEFALCON-7731. Globex rockets fly from Cypress Creek.\n"
KEYS = """
tenants:
  acme: {keys: ["sk-acme"], collections: ["acme"], base: true}
  globex: {keys: ["sk-globex"], collections: ["globex"], base: true}
  ops: {keys: ["sk-ops"], admin: true}
"""
QUESTIONS = ["What is the Acme vault PIN?", "Where does Acme keep its spare keys?"]


def _register(ws, name: str, method: str, settings: dict, collection: str, seed: int) -> None:
    """A module with random weights (strong, distinct effects; no training time) in `collection`."""
    impl = registry.method(method)()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = impl.attach(tiny_lm()[0], impl.config_class(**settings), tiny_tokenizer(), ACME)
        with torch.no_grad():
            for param_name, p in model.named_parameters():
                if method != "lora" or "lora_B" in param_name:
                    p.add_(torch.randn_like(p) * (0.3 if method == "lora" else 0.05))
    directory = ws.module_dir(name, 1)
    directory.mkdir(parents=True)
    files = impl.save(model, directory)
    manifest = {"name": name, "version": 1, "method": method, "base_model": "tiny", "files": files,
                "corpus_version": ws.corpus_version(collection), "config": {method: settings}, "metrics": {},
                "collection": collection, "created_at": pipeline.now()}  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest))
    ws.register_module(name, 1, method, "tiny", str(directory), manifest["corpus_version"], manifest, collection)


@pytest.fixture(scope="module")
def vllm_ws(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("vllm-ws")
    monkeypatch_module.setenv("IMPRINT_CACHE", str(root / "cache"))  # adapters in vLLM form go to the user cache
    ws = Workspace.open(root / "ws")
    for name, text in (("acme", ACME), ("globex", GLOBEX)):
        (root / f"{name}.md").write_text(text)
        pipeline.add(ws, [str(root / f"{name}.md")], model="tiny", collection=name)
    _register(ws, "acme-notes", "lora", {"r": 4, "alpha": 8}, "acme", seed=1)
    _register(ws, "globex-plans", "lora", {"r": 8, "alpha": 8}, "globex", seed=2)
    _register(ws, "acme-prefix", "prefix", {"n_tokens": 4, "init": "random"}, "acme", seed=3)
    ws.close()
    (root / "keys.yaml").write_text(KEYS)
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def upstream():
    model, tokenizer = tiny_lm()
    state = FakeState("tiny")
    with BackgroundServer(fake_app(model, tokenizer, state)) as running:
        running.state = state
        yield running


@pytest.fixture(scope="module")
def fronts(vllm_ws, upstream):
    """The same workspace served twice: by imprint's own engine, and by the vLLM engine in front of `upstream`."""
    common = dict(max_tokens=64, default_max_tokens=12, batch_window_ms=20)
    local = create_app(vllm_ws / "ws", model="tiny", keys=vllm_ws / "keys.yaml", config=ServeConfig(**common))
    config = ServeConfig(**common, engine="vllm", vllm_url=upstream.url)  # `.../v1` is accepted too
    forwarded = create_app(vllm_ws / "ws", model="tiny", keys=vllm_ws / "keys.yaml", config=config)
    with BackgroundServer(local) as a, BackgroundServer(forwarded) as b:
        yield a, b


def client(server, key="sk-acme"):
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)


def test_answers_and_records_are_the_same_through_vllm(fronts, upstream):
    local, vllm = fronts
    upstream.state.requests.clear()
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        want = client(local).chat.completions.create(model="acme-notes", messages=messages)
        got = client(vllm).chat.completions.create(model="acme-notes", messages=messages)
        assert got.choices[0].message.content == want.choices[0].message.content
        assert got.usage.completion_tokens == want.usage.completion_tokens
        extra = {"imprint": {"retrieval": True, "evidence": True, "k": 2}}
        want = client(local).chat.completions.create(model="acme-notes", messages=messages, extra_body=extra)
        got = client(vllm).chat.completions.create(model="acme-notes", messages=messages, extra_body=extra)
        assert got.choices[0].message.content == want.choices[0].message.content
        a, b = want.model_extra["imprint"], got.model_extra["imprint"]
        assert b["mode"] == "module+rag" and b["module"] == "acme-notes@1" and b["evidence"] == a["evidence"]
        assert abs(b["confidence"] - a["confidence"]) < 0.05  # the first token's probability over ~top-20 only
    sent = upstream.state.requests[0]
    assert sent["model"] == "acme-notes@1" and sent["temperature"] == 0 and sent["stop"] == list(ANSWER_STOPS)
    assert sent["prompt"] == tiny_tokenizer()(qa_prompt(QUESTIONS[0])).input_ids  # imprint's prompt, as ids
    assert sent["logprobs"] == 20 and sent["return_tokens_as_token_ids"] and sent["stream"]
    assert [load["lora_name"] for load in upstream.state.loads] == ["acme-notes@1"]  # loaded once, at first use


def test_streams_and_completions_match(fronts):
    local, vllm = fronts
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    whole = client(vllm).chat.completions.create(model="acme-notes", messages=messages).choices[0].message.content
    parts = client(vllm).chat.completions.create(model="acme-notes", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == whole
    for model in ("tiny", "acme-notes"):
        want = client(local).completions.create(model=model, prompt="The Acme vault", max_tokens=10, temperature=0)
        got = client(vllm).completions.create(model=model, prompt="The Acme vault", max_tokens=10, temperature=0)
        assert got.choices[0].text == want.choices[0].text and got.choices[0].finish_reason == "length"


def test_tenants_stay_apart_and_other_kinds_are_refused(fronts, upstream):
    _, vllm = fronts
    listed = {m.id for m in client(vllm).models.list()}
    assert listed == {"tiny", "acme-notes", "acme-notes@1"}  # not globex's module, not the prefix module
    before = (len(upstream.state.requests), len(upstream.state.loads))
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    with pytest.raises(openai.NotFoundError):
        client(vllm).chat.completions.create(model="globex-plans", messages=messages)
    with pytest.raises(openai.BadRequestError, match="prefix module and vLLM serves LoRA modules only"):
        client(vllm).chat.completions.create(model="acme-prefix", messages=messages)
    assert (len(upstream.state.requests), len(upstream.state.loads)) == before  # vLLM never heard of either
    globex = client(vllm, "sk-globex").chat.completions.create(model="globex-plans", messages=messages)
    assert globex.model == "globex-plans@1"
    stats = httpx.get(f"{vllm.root}/v1/imprint/stats", headers={"Authorization": "Bearer sk-acme"}).json()
    assert stats["tenant"] == "acme" and stats["modules"]["loaded"] == 1  # globex's adapter is not acme's to see


def test_a_blank_first_token_is_replaced_as_the_local_engine_does(fronts, upstream):
    """vLLM cannot forbid a blank opening; when it opens with a newline the engine continues from the likeliest
    other token, which is what the local engine picks."""
    local, vllm = fronts
    tokenizer = tiny_tokenizer()
    question = QUESTIONS[1]
    suffix = tuple(tokenizer(qa_prompt(question)).input_ids[-3:])
    upstream.state.force_first[suffix] = tokenizer.convert_tokens_to_ids("Ċ")  # "\n"
    try:
        messages = [{"role": "user", "content": question}]
        want = client(local).chat.completions.create(model="acme-notes", messages=messages)
        got = client(vllm).chat.completions.create(model="acme-notes", messages=messages)
    finally:
        upstream.state.force_first.clear()
    assert got.choices[0].message.content == want.choices[0].message.content != ""
    stats = httpx.get(f"{vllm.root}/v1/imprint/stats", headers={"Authorization": "Bearer sk-ops"}).json()
    assert stats["scheduler"]["first_token_retries"] >= 1 and stats["modules"]["engine"] == "vllm"


def test_the_vllm_command(vllm_ws, tmp_path):
    config = ServeConfig(max_loras=6, vllm_args="--gpu-memory-utilization 0.8")
    adapters = {"acme-notes@1": tmp_path / "a", "globex-plans@1": tmp_path / "g"}
    assert vllm_command(Path("/models/base"), "base", 8123, adapters, config, 16) == [
        "vllm", "serve", "/models/base", "--served-model-name", "base", "--host", "127.0.0.1", "--port", "8123",
        "--enable-lora", "--max-loras", "6", "--max-lora-rank", "16", "--max-logprobs", "20",
        "--lora-modules", f"acme-notes@1={tmp_path / 'a'}", f"globex-plans@1={tmp_path / 'g'}",
        "--gpu-memory-utilization", "0.8",
    ]  # fmt: skip


def test_refused_in_one_line_without_vllm(vllm_ws, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ImprintError, match="--engine vllm needs vLLM: the vllm package is not installed"):
        start_vllm(vllm_ws / "ws", ServeConfig(engine="vllm"), "tiny")
    port = str(free_port())
    argv = ["--workspace", str(vllm_ws / "ws"), "serve", "--engine", "vllm", "--model", "tiny", "--port", port]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error: --engine vllm needs vLLM") and "\n" not in err


VLLM_SCRIPT = """#!{python}
import sys
sys.path.insert(0, {tests!r})
sys.argv[0] = "vllm"
from fake_vllm import main
main()
"""


def test_launches_vllm_with_the_modules_and_stops_it(vllm_ws, tmp_path, monkeypatch):
    """A stand-in `vllm` executable (and package, for the installed check) on PATH: imprint starts it with the
    modules on its command line, waits for it, answers through it without runtime loads, and stops it."""
    bin_dir, package = tmp_path / "bin", tmp_path / "site" / "vllm"
    bin_dir.mkdir()
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    script = bin_dir / "vllm"
    script.write_text(VLLM_SCRIPT.format(python=sys.executable, tests=str(Path(__file__).parent)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.syspath_prepend(str(package.parent))
    config = ServeConfig(engine="vllm", max_loras=2, vllm_start_timeout_s=120, default_max_tokens=8)
    app = create_app(vllm_ws / "ws", model="tiny", keys=vllm_ws / "keys.yaml", config=config)
    engine = app.state.service.engine
    with BackgroundServer(app) as server:
        assert engine.loaded == {"acme-notes@1", "globex-plans@1"}  # given on vLLM's command line
        assert "2 LoRA module version(s) handed over; not served by this engine: acme-prefix@1" in engine.note
        lines = engine.process.log.read_text().splitlines()
        started = json.loads(next(line for line in lines if line.startswith("{")))
        assert started["argv_rest"] == ["--enable-lora", "--max-loras", "2", "--max-lora-rank", "16",
                                        "--max-logprobs", "20"]  # fmt: skip
        assert set(started["adapters"]) == {"acme-notes@1", "globex-plans@1"}
        messages = [{"role": "user", "content": QUESTIONS[0]}]
        answer = client(server).chat.completions.create(model="acme-notes", messages=messages)
        assert answer.model == "acme-notes@1" and answer.usage.completion_tokens > 0
    assert engine.stats["adapters_loaded_at_runtime"] == 0 and engine.stats["rows"] == 1
    assert engine.process.process.poll() is not None  # vLLM stopped with the server


def test_the_front_holds_no_weights_when_vllm_does(tmp_path):
    """In front of vLLM a local base directory is held as tokenizer, config and generation config only: the
    architecture sits on the meta device, and the stop tokens and context window come out as the local engine's."""
    from imprint.inference import stop_token_ids
    from imprint.serve.vllm import base_without_weights

    model, tokenizer = tiny_lm()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    shell = base_without_weights(str(tmp_path / "base"))
    assert all(p.device.type == "meta" for p in shell.model.parameters())
    assert shell.name == str((tmp_path / "base").resolve())
    assert shell.tokenizer("a b").input_ids == tokenizer("a b").input_ids
    assert stop_token_ids(shell.tokenizer, shell.model) == stop_token_ids(tokenizer, model)
    assert shell.model.config.max_position_embeddings == model.config.max_position_embeddings
