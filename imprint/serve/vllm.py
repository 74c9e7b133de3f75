"""`imprint serve --engine vllm`: hand generation to vLLM, keep imprint's front door.

imprint's FastAPI app still authenticates tenants, resolves `model` to a module, retrieves, checks limits and builds
each answer's record; only decoding moves: the rows go to vLLM's OpenAI endpoint (`vllm_engine.VllmEngine`). At
start-up this module exports every LoRA module of the workspace on this base in vLLM's form into a cache directory
and starts

    vllm serve BASE_DIR --served-model-name NAME --host 127.0.0.1 --port P --enable-lora --max-loras N
        --max-lora-rank R --max-logprobs 20 --lora-modules name@v=DIR ...

with runtime LoRA loading enabled (`VLLM_ALLOW_RUNTIME_LORA_UPDATING`), so modules trained later load on their
first request. vLLM serves LoRA only: prefix, full and memory modules are left out of `/v1/models` (start-up prints
which) and a request naming one is a 400 saying to serve it with the local engine. `serve.vllm_url` points at a
vLLM already running on this machine instead (then every module loads at runtime).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from imprint.errors import ImprintError
from imprint.methods.lora.export import FILES, adapter_problems, lora_rank, vllm_rank, write_adapter
from imprint.models import EMBEDDED, BaseModel, cache_root, load_base, load_tokenizer, resolve_model_dir
from imprint.serve.config import ServeConfig
from imprint.serve.scheduler import ModuleRef
from imprint.serve.vllm_engine import TOP_LOGPROBS, VllmEngine

RUNTIME_LORA = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def vllm_missing() -> str | None:
    """Why `vllm serve` cannot be started here (None: it can)."""
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (pip install vllm, on a machine with a GPU vLLM supports)"
    if shutil.which("vllm") is None:
        return "the vllm command is not on PATH"
    return None


def served_name(base: BaseModel) -> str:
    """The base model's name in vLLM (and in imprint's own `/v1/models`)."""
    return Path(base.name).name


def base_without_weights(name: str) -> BaseModel:
    """The base as the front needs it when vLLM holds the weights: tokenizer, config and generation config, with the
    architecture on the meta device (no memory). `tiny` is built for real (it is tiny)."""
    if name == "tiny":
        return load_base(name)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    directory = resolve_model_dir(name)
    tokenizer = load_tokenizer(name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(directory)))
    if (directory / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(str(directory))
    return BaseModel(name if name in EMBEDDED else str(Path(name).expanduser().resolve()), model, tokenizer)


def cache_dir(workspace: Path) -> Path:
    """Where this workspace's adapters in vLLM's form (and the vLLM log) live: the user cache, not the workspace."""
    key = hashlib.sha1(str(Path(workspace).resolve()).encode()).hexdigest()[:12]
    return cache_root() / "vllm" / key


def base_dir(base: BaseModel) -> Path:
    """The directory vLLM loads the base from (the generated `tiny` model is saved once into the cache)."""
    directory = resolve_model_dir(base.name)
    if directory is not None:
        return Path(directory)
    target = cache_root() / "vllm" / "tiny-base"
    if not (target / "config.json").exists():
        base.model.save_pretrained(str(target))
        base.tokenizer.save_pretrained(str(target))
    return target


class Adapters:
    """The workspace's LoRA modules in vLLM's form: which a vLLM server can take, written once per version."""

    def __init__(self, directory: Path, base_dir: str | None, max_rank: int = 0):
        self.directory = directory
        self.base_dir = base_dir
        self.max_rank = max_rank  # the server's --max-lora-rank once it is started (0: not yet fixed)
        self._problems: dict[str, str | None] = {}
        self._ranks: dict[str, int] = {}

    def refuses(self, module: ModuleRef) -> str | None:
        """Why vLLM cannot serve `module` (None: it can), worked out once per module version."""
        if module.method != "lora":
            return (f"it is a {module.method} module and vLLM serves LoRA modules only; serve it with the local "
                    "engine (`imprint serve` without --engine vllm)")  # fmt: skip
        if module.key not in self._problems:
            missing = [f for f in FILES if not (module.directory / f).is_file()]
            problems = [f"its {missing[0]} is missing"] if missing else adapter_problems(module.directory)
            self._problems[module.key] = "; ".join(problems) or None
        if self._problems[module.key]:
            return f"vLLM cannot load it: {self._problems[module.key]}"
        if module.key not in self._ranks:
            self._ranks[module.key] = lora_rank(module.directory)
        rank = self._ranks[module.key]
        if self.max_rank and rank > self.max_rank:
            return f"its rank {rank} exceeds this vLLM's --max-lora-rank {self.max_rank} (restart the server)"
        return None

    def prepare(self, module: ModuleRef) -> Path:
        """The module's adapter in vLLM's form (a module version never changes: written once, then reused)."""
        out = self.directory / module.key
        if not (out / "adapter_config.json").exists():
            write_adapter(module.directory, out, self.base_dir, {"name": module.key}, "vllm", None)
        return out


def vllm_command(base: Path, name: str, port: int, adapters: dict[str, Path], config: ServeConfig,
                 max_rank: int) -> list[str]:  # fmt: skip
    """The exact `vllm serve` command line."""
    argv = ["vllm", "serve", str(base), "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
            "--enable-lora", "--max-loras", str(config.max_loras), "--max-lora-rank", str(max_rank),
            "--max-logprobs", str(TOP_LOGPROBS)]  # fmt: skip
    if adapters:
        argv += ["--lora-modules", *(f"{key}={path}" for key, path in adapters.items())]
    return argv + shlex.split(config.vllm_args)


class VllmProcess:
    """A `vllm serve` child process: started, waited for until `/health` answers, stopped with the server."""

    def __init__(self, argv: list[str], url: str, log: Path, timeout_s: float):
        self.url, self.log = url, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ,
                                            **RUNTIME_LORA}, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise ImprintError(f"vLLM exited with status {self.process.returncode} while starting: {tail[0]} "
                                   f"(log: {log})")  # fmt: skip
            if time.monotonic() > deadline:
                self.close()
                raise ImprintError(f"vLLM did not start within {timeout_s:.0f} s (log: {log}); raise "
                                   "serve.vllm_start_timeout_s if the model is large")  # fmt: skip
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_vllm(workspace: Path, config: ServeConfig, model: str, base: BaseModel | None = None):
    """(base, engine): export the workspace's LoRA modules for vLLM, start vLLM (or reach the one at
    `serve.vllm_url`) and return the engine that forwards rows to it, beside the base as the front holds it (`base`
    when given, else `model` without its weights). The engine's `note` says what was handed over and what not."""
    from imprint.serve.server import free_port
    from imprint.workspace import Workspace

    if not config.vllm_url and (missing := vllm_missing()):  # before anything loads
        raise ImprintError(f"--engine vllm needs vLLM: {missing}; or set serve.vllm_url to a running vLLM")
    base = base or base_without_weights(model)
    directory = cache_dir(workspace)
    adapters = Adapters(directory / "adapters", None if base.name == "tiny" else str(base_dir(base)))
    handed, left_out = {}, []
    ws = Workspace.open(workspace)
    try:
        for m in ws.modules():
            if m.base_model != base.name:
                continue
            ref = ModuleRef(f"{m.name}@{m.version}", m.method, Path(m.path), m.collection)
            why = adapters.refuses(ref)
            if why:
                left_out.append(f"{ref.key} ({m.method})")
            else:
                handed[ref.key] = adapters.prepare(ref)
    finally:
        ws.close()
    ranks = [lora_rank(path) for path in handed.values()]
    adapters.max_rank = config.max_lora_rank or max(16, vllm_rank(max(ranks, default=1)))
    process = None
    if config.vllm_url:
        url, preloaded = config.vllm_url.rstrip("/").removesuffix("/v1"), {}
    else:
        port = config.vllm_port or free_port()
        url, preloaded = f"http://127.0.0.1:{port}", handed
        argv = vllm_command(base_dir(base), served_name(base), port, handed, config, adapters.max_rank)
        process = VllmProcess(argv, url, directory / "vllm.log", config.vllm_start_timeout_s)
    engine = VllmEngine(url, served_name(base), base.tokenizer, adapters, config, preloaded, process)
    engine.note = (f"generation by vLLM at {url}: {len(handed)} LoRA module version(s) handed over"
                   + (f"; not served by this engine: {', '.join(left_out)}" if left_out else ""))  # fmt: skip
    return base, engine
