"""Serving throughput and latency: the base model alone vs 8 different LoRA modules mixed in the same batches.

Starts `imprint serve` (a separate process) on 127.0.0.1 over a temporary workspace holding 8 LoRA modules of the
shape `imprint train` makes on the embedded gemma-3-270m (rank 32, alpha 64, every linear layer). The modules are
randomly initialised with a nonzero B (A as PEFT initialises it, B ~ N(0, 0.02)), not trained: serving cost does
not depend on the values, and training 8 modules would take an hour on this CPU. A bounded load generator (the
official `openai` async client, `--clients` concurrent clients, `--requests` requests per scenario) then sends
completions of exactly `--max-tokens` tokens each (greedy, `ignore_eos`, so every scenario decodes the same
number of tokens):

  (a) every request on the base model;
  (b) requests spread round-robin over the 8 modules, so every batch mixes them.

Scenarios alternate a, b, b, a, ... over `--rounds` so a machine shared with other work slows both alike; the
table shows each scenario's median round, and the last line the ratio (b) / (a) of tokens/s (target >= 0.7).
With `--backends segmented,peft` a second server applies the adapters with PEFT's own mixed-adapter batches.

    python bench/serve.py [--clients 16] [--requests 48] [--max-tokens 24] [--rounds 2] [--backends segmented,peft]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from imprint.models import DEFAULT_MODEL, load_base
from imprint.serve import free_port
from imprint.workspace import Workspace

N_MODULES = 8


def make_modules(ws: Workspace, model_name: str) -> list[str]:
    """8 LoRA modules with `imprint train`'s default shape and random nonzero B, registered in `ws`."""
    from imprint.methods.lora.config import LoraMethodConfig
    from imprint.methods.lora.method import LoraMethod

    base = load_base(model_name)
    config = LoraMethodConfig()
    names = []
    for i in range(N_MODULES):
        torch.manual_seed(i)
        peft_model = LoraMethod().attach(base.model, config)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        name, directory = f"bench{i}", ws.module_dir(f"bench{i}", 1)
        directory.mkdir(parents=True)
        files = LoraMethod().save(peft_model, directory)
        note = "random nonzero B, untrained (bench/serve.py)"
        manifest = {"name": name, "version": 1, "method": "lora", "base_model": base.name, "files": files,
                    "config": {"lora": dataclasses.asdict(config)}, "note": note}  # fmt: skip
        (directory / "manifest.json").write_text(json.dumps(manifest))
        ws.register_module(name, 1, "lora", base.name, str(directory), ws.corpus_version(), manifest)
        base.model = peft_model.unload()  # the plain base again, for the next module
        names.append(name)
    return names


def start_server(workspace: Path, model: str, backend: str, threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "imprint.cli", "--workspace", str(workspace), "serve", "--model", model,
               "--port", str(port), "--set", f"serve.lora_backend={backend}"]  # fmt: skip
    if threads:
        command += ["--threads", str(threads)]
    log = workspace / f"server-{backend}.log"  # a file, not a pipe: an unread pipe would block the server
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                return process, root
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start within 5 minutes")


async def load(root: str, models: list[str], clients: int, requests: int, max_tokens: int) -> dict:
    """`clients` concurrent clients send `requests` completions in all; returns tokens/s and latencies."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{root}/v1", api_key="bench", max_retries=0, timeout=600)
    queue = list(range(requests))
    latencies, tokens = [], 0

    async def worker():
        nonlocal tokens
        while queue:
            i = queue.pop()
            t0 = time.perf_counter()
            out = await client.completions.create(
                model=models[i % len(models)], prompt=f"Question {i}: who approves travel expenses?\nAnswer:",
                max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True},
            )  # fmt: skip
            latencies.append(time.perf_counter() - t0)
            tokens += out.usage.completion_tokens

    before = httpx.get(f"{root}/v1/imprint/stats").json()["scheduler"]
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    after = httpx.get(f"{root}/v1/imprint/stats").json()["scheduler"]
    await client.close()
    q = statistics.quantiles(latencies, n=20)
    return {
        "tokens_per_s": tokens / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": q[18] * 1000,
        "rows_per_step": (after["row_steps"] - before["row_steps"]) / max(1, after["steps"] - before["steps"]),
        "prefills": after["prefills"] - before["prefills"],
        "prefill_s": after["prefill_s"] - before["prefill_s"],
        "step_s": after["step_s"] - before["step_s"],
        "tokens": tokens,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default="segmented", help="comma list of serve.lora_backend values")
    parser.add_argument("--threads", type=int, help="torch threads of the server (default: torch's choice)")
    args = parser.parse_args()

    ws_dir = Path(tempfile.mkdtemp(prefix="imprint-bench-serve-"))
    modules = make_modules(Workspace.open(ws_dir), args.model)
    base_name = Path(args.model).name  # the name the server answers to for its base model
    scenarios = {"(a) base alone": [base_name], f"(b) {N_MODULES} LoRA mixed": modules}
    print(f"{args.clients} clients, {args.requests} requests per scenario, {args.max_tokens} tokens each, "
          f"{args.rounds} rounds, torch threads {args.threads or torch.get_num_threads()}", flush=True)  # fmt: skip
    table = []
    for backend in args.backends.split(","):
        process, root = start_server(ws_dir, args.model, backend, args.threads)
        try:
            asyncio.run(load(root, [base_name, *modules], len(modules) + 1, len(modules) + 1, 2))  # load + warm up
            runs: dict[str, list[dict]] = {name: [] for name in scenarios}
            for r in range(args.rounds):
                order = list(scenarios) if r % 2 == 0 else list(reversed(scenarios))
                for name in order:
                    result = asyncio.run(load(root, scenarios[name], args.clients, args.requests, args.max_tokens))
                    runs[name].append(result)
                    print(f"  {backend} round {r + 1} {name}: {result['tokens_per_s']:.1f} tokens/s; worker busy "
                          f"{result['prefill_s']:.1f} s in {result['prefills']} prefills + {result['step_s']:.1f} s in "
                          f"decode steps of {result['wall_s']:.1f} s", flush=True)  # fmt: skip
            for name, results in runs.items():
                results.sort(key=lambda x: x["tokens_per_s"])
                table.append((backend, name, results[(len(results) - 1) // 2]))
        finally:
            process.terminate()
            process.wait(60)
    print(f"\n{'lora backend':<13} {'scenario':<20} {'tokens/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'rows/step':>10}")
    for backend, name, r in table:
        print(f"{backend:<13} {name:<20} {r['tokens_per_s']:>9.1f} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} "
              f"{r['rows_per_step']:>10.1f}")  # fmt: skip
    for backend in args.backends.split(","):
        a, b = (r["tokens_per_s"] for bk, _, r in table if bk == backend)
        print(f"ratio (b) / (a), {backend}: {b / a:.2f}  (target >= 0.7)")


if __name__ == "__main__":
    main()
