"""Training throughput: imprint's loop vs a plain transformers + PEFT loop, on the same batches, same machine.

Both train the same LoRA (rank 32, all linear layers) on the embedded gemma-3-270m in bf16 over the same
padded batches of the `rules` synthetic set of the bundled sample corpus. The plain loop is what most
scripts do: `model(input_ids, attention_mask, labels=labels).loss.backward()`, which projects every position
onto the 262k-token vocabulary in one tensor. imprint's loop projects only labelled positions, block by block,
with the element-wise softmax work fused by torch.compile (imprint/train/loss.py).

MFU is model FLOPs per second over the bf16 matmul peak measured at the start of the same run. Model FLOPs
count what a frozen-base LoRA step must compute: forward (2 N) + activation gradients (2 N) per token for the
N non-embedding parameters, and the same 4 V d per *labelled* position for the vocabulary projection.

    python bench/train_throughput.py [--steps 12] [--warmup 2]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from imprint.ingest import ingest_paths
from imprint.methods.lora.config import LoraMethodConfig
from imprint.methods.lora.method import LoraMethod
from imprint.models import load_base
from imprint.synth.rules import RulesStrategy
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record, make_batches
from imprint.train.loss import causal_lm_loss
from imprint.workspace import Workspace

SAMPLE = Path(__file__).resolve().parents[1] / "imprint" / "data" / "sample" / "corpus"


def matmul_peak(dtype=torch.bfloat16, n=4096, repeats=5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def batches_for_bench(tokenizer, batch_tokens: int):
    ws = Workspace.open(Path(tempfile.mkdtemp()))
    ingest_paths(ws, [SAMPLE], lambda s: len(tokenizer.encode(s, add_special_tokens=False)))
    records = RulesStrategy().synthesize(ws.documents(), ws.chunks())
    examples = [encode_record(r, tokenizer, 384) for r in records]
    return make_batches(examples, batch_tokens, tokenizer.pad_token_id, random.Random(0))


def plain_step(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    out.loss.backward()


def imprint_step(model, batch):
    loss, _ = causal_lm_loss(model, batch, TrainConfig().loss_chunk)
    loss.backward()


def run(name, step, batches, warmup, flops_of) -> dict:
    base = load_base("gemma-3-270m")
    model = LoraMethod().attach(base.model, LoraMethodConfig())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens = flops = 0
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        step(model, batch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += batch["n_tokens"]
            flops += flops_of(batch)
    wall = time.perf_counter() - start
    return {"loop": name, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "flops_per_s": flops / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compile, allocator)")
    args = parser.parse_args()
    torch.manual_seed(0)
    peak = matmul_peak()
    base = load_base("gemma-3-270m")
    config = base.model.config
    vocab_d = config.vocab_size * config.hidden_size
    n_body = sum(p.numel() for p in base.model.parameters()) - vocab_d  # tied embedding counted once
    batches = batches_for_bench(base.tokenizer, TrainConfig().batch_tokens)
    random.Random(1).shuffle(batches)
    batches = batches[: args.warmup + args.steps]
    del base

    def flops_of(batch):
        labelled = int((batch["labels"][:, 1:] != -100).sum())
        return 4 * n_body * batch["n_tokens"] + 4 * vocab_d * labelled

    rows = [
        run("plain transformers+PEFT", plain_step, batches, args.warmup, flops_of),
        run("imprint", imprint_step, batches, args.warmup, flops_of),
    ]
    print(f"\nbf16 matmul peak measured: {peak / 1e9:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    print(f"{'loop':<26}{'tokens':>8}{'wall s':>9}{'tokens/s':>10}{'MFU':>8}")
    for r in rows:
        mfu = r["flops_per_s"] / peak
        print(f"{r['loop']:<26}{r['tokens']:>8}{r['wall_s']:>9.1f}{r['tokens_per_s']:>10.1f}{mfu:>8.1%}")
    print(f"speed-up imprint / plain: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
