"""Training throughput: imprint's loop vs a plain transformers + PEFT loop, interleaved step by step in one run.

Both train the same LoRA (rank 32, all linear layers) on the embedded gemma-3-270m in the dtype imprint picks
for the machine (bf16 where it is native, else fp32), on the `rules`
synthetic set of the bundled sample corpus. The plain loop is what most scripts do: length-bucketed padded
batches, `model(input_ids, attention_mask, labels=labels).loss.backward()`, which projects every position onto
the 262k-token vocabulary in one tensor, with PEFT's fp32 adapters. imprint's step is the training loop's own
(imprint.train.compute.MicroStep with the default TrainConfig): packed rows, loss on labelled positions only
with gradients computed in the forward (imprint/train/loss.py), bf16 autocast without PEFT's fp32 input copies,
compiled decoder layers with eager attention, rows `train.pack_width` tokens wide.

The loops take turns, one step each, with a short matmul probe before every round, so a machine shared
with other work slows them alike; the first `--warmup` steps of each (compilation, allocator) are untimed.
MFU is model FLOPs per second over the machine's matmul peak in that dtype: the fastest of the probes (a 2048^3
matmul, best of 4 each), so a probe slowed by other work cannot inflate it. Model FLOPs count what a
frozen-base LoRA step must compute: forward (2 N) + activation gradients (2 N) per token for the N
non-embedding parameters, and the same 4 V d per *labelled* position for the vocabulary projection
(attention score FLOPs and adapter FLOPs are not counted, for either loop).

    python bench/train_throughput.py [--steps 8] [--warmup 3] [--threads N] [--variants 'plain;imprint;...']

A variant `imprint:key=value,...` runs imprint's step with those TrainConfig settings (an ablation).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from imprint.doctor import cpu_flags
from imprint.ingest import ingest_paths
from imprint.methods.lora.config import LoraMethodConfig
from imprint.methods.lora.method import LoraMethod
from imprint.models import load_base, preferred_dtype
from imprint.synth.rules import RulesStrategy
from imprint.train.compute import MicroStep, cpu_model
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record, make_batches, pack_batches
from imprint.workspace import Workspace

SAMPLE = Path(__file__).resolve().parents[1] / "imprint" / "data" / "sample" / "corpus"


def matmul_rate(dtype=None, n=2048, repeats=4) -> float:
    """The best of `repeats` timed n^3 matmuls in the dtype training computes in here (bf16 where the hardware has
    it, else fp32), in FLOP/s."""
    dtype = dtype or preferred_dtype()
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def sample_examples(tokenizer, max_len: int):
    ws = Workspace.open(Path(tempfile.mkdtemp()))
    ingest_paths(ws, [SAMPLE], lambda s: len(tokenizer.encode(s, add_special_tokens=False)))
    records = RulesStrategy().synthesize(ws.documents(), ws.chunks())
    return [encode_record(r, tokenizer, max_len) for r in records]


class Loop:
    """One LoRA model, its batches and its step, timed separately from the other loops'."""

    def __init__(self, name: str, examples, config: TrainConfig | None):
        base = load_base("gemma-3-270m")
        torch.manual_seed(0)
        self.name, self.config = name, config
        self.model = LoraMethod().attach(base.model, LoraMethodConfig())
        self.model.train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        rng, pad = random.Random(0), base.tokenizer.pad_token_id
        if config is None or not config.pack:
            self.batches = make_batches(examples, (config or TrainConfig()).batch_tokens, pad, rng)
        else:
            self.batches = pack_batches(examples, config.batch_tokens, config.pack_width, pad, rng)
        # as many steps as imprint's default run (5 epochs) on this data takes, for train.compile=auto
        self.micro = MicroStep(self.model, config, 5 * len(self.batches)).__enter__() if config else None
        self.done = self.tokens = self.labelled = 0
        self.wall = 0.0

    def step(self, timed: bool) -> None:
        batch = self.batches[self.done % len(self.batches)]
        start = time.perf_counter()
        if self.micro:
            self.micro(batch)
        else:
            kept = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
            self.model(**kept).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.done += 1
        if timed:
            self.wall += time.perf_counter() - start
            self.tokens += batch["n_tokens"]
            self.labelled += int((batch["labels"][:, 1:] != -100).sum())


def parse_variant(spec: str) -> tuple[str, TrainConfig | None]:
    if spec == "plain":
        return "plain transformers+PEFT", None
    name, _, settings = spec.partition(":")
    if name != "imprint":
        raise SystemExit(f"unknown variant {spec!r}: use plain, imprint or imprint:key=value,...")
    values = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
    from imprint.config import build

    return spec, build(TrainConfig, "train", values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps per loop (compile, allocator)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as torch starts, all cores)")
    parser.add_argument("--variants", default="plain;imprint", help="';'-separated: plain, imprint[:k=v,...]")
    args = parser.parse_args()
    specs = [s.strip() for s in args.variants.split(";") if s.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_base("gemma-3-270m")
    config = base.model.config
    vocab_d = config.vocab_size * config.hidden_size
    n_body = sum(p.numel() for p in base.model.parameters()) - vocab_d  # tied embedding counted once
    examples = sample_examples(base.tokenizer, TrainConfig().max_len)
    del base
    loops = [Loop(name, examples, cfg) for name, cfg in map(parse_variant, specs)]
    rates = []
    for round_ in range(args.warmup + args.steps):
        timed = round_ >= args.warmup
        if timed:
            rates.append(matmul_rate())
        for loop in loops:
            loop.step(timed)
        print(
            f"round {round_ + 1}/{args.warmup + args.steps}: "
            + ", ".join(f"{lp.name} {lp.tokens / lp.wall:.0f} tok/s" if lp.wall else lp.name for lp in loops),
            flush=True,
        )
    peak = max(rates)
    flags = " ".join(sorted(cpu_flags() & {"amx_bf16", "avx512_bf16", "avx512f", "avx2"}))
    print(f"\nmachine: {cpu_model()} ({flags or 'no flags read'}); training dtype {preferred_dtype()}")
    for lp in loops:
        if lp.micro:
            print(f"{lp.name}: {lp.micro.describe()}")
    dtype = str(preferred_dtype()).removeprefix("torch.")
    print(
        f"{dtype} matmul peak (2048^3, fastest of {len(rates)} probes between rounds): {peak / 1e9:.0f} GFLOP/s "
        f"(median {statistics.median(rates) / 1e9:.0f}, min {min(rates) / 1e9:.0f}; {torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()})"
    )
    print(f"{'loop':<34}{'steps':>6}{'tokens':>8}{'wall s':>9}{'tokens/s':>10}{'MFU':>8}")
    for lp in loops:
        flops = 4 * n_body * lp.tokens + 4 * vocab_d * lp.labelled
        mfu = flops / lp.wall / peak
        print(f"{lp.name:<34}{args.steps:>6}{lp.tokens:>8}{lp.wall:>9.1f}{lp.tokens / lp.wall:>10.1f}{mfu:>8.1%}")
    if loops[0].config is None:
        for lp in loops[1:]:
            ratio = (lp.tokens / lp.wall) / (loops[0].tokens / loops[0].wall)
            print(f"speed-up {lp.name} / plain: {ratio:.2f}x")
    for lp in loops:
        if lp.micro:
            lp.micro.__exit__()
    shown = ("batch_tokens", "max_len", "pack_width")
    settings = {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k in shown}
    print(f"imprint defaults: {settings}")


if __name__ == "__main__":
    main()
