"""The training loop, top to bottom: data -> forward -> loss -> step -> log. No Trainer, no callbacks.

bf16 weights on CPUs that multiply bf16 natively (AMX here: ~8x fp32); trainable parameters stay fp32 (PEFT
keeps adapters in fp32), AdamW with linear warm-up and cosine decay, gradient accumulation and clipping.
Examples are packed into rows (imprint.train.data) unless `train.pack=false`; each step can be logged to
TensorBoard, W&B or MLflow (`train.log`, imprint.train.tracking).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from imprint.errors import ImprintError
from imprint.train.compute import MicroStep
from imprint.train.config import TrainConfig
from imprint.train.data import Example, make_batches, pack_batches
from imprint.train.tracking import open_tracker


@dataclass
class TrainResult:
    steps: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    wall_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict:
        k = max(1, len(self.losses) // 10)
        return {
            "steps": self.steps,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "wall_s": round(self.wall_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "loss_first": round(sum(self.losses[:k]) / k, 4) if self.losses else None,
            "loss_last": round(sum(self.losses[-k:]) / k, 4) if self.losses else None,
            "loss_curve": [round(x, 4) for x in self.losses],
            "resumed_from": self.resumed_from,
        }


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    warm = max(1, int(total * config.warmup))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, result: TrainResult, fingerprint: str) -> None:
    """Trainable weights, optimizer moments, RNG and counters, written atomically (a kill mid-write is harmless)."""
    state = {
        "fingerprint": fingerprint,
        "step": result.steps,
        "trainable": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "result": dataclasses.asdict(result),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, fingerprint: str) -> TrainResult:
    state = torch.load(path, weights_only=False)
    if state["fingerprint"] != fingerprint:
        raise ImprintError(f"checkpoint {path} was made with other data or settings; remove it or drop --resume")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return TrainResult(**state["result"])


def train(
    model: torch.nn.Module,
    examples: list[Example],
    pad_id: int,
    config: TrainConfig,
    progress=None,
    checkpoint: Path | None = None,
    resume: bool = False,
    log_dir: Path | None = None,
):
    """Train the model's trainable parameters on `examples`; returns a TrainResult.

    `progress(done, total, info)` is called after each step. With `checkpoint`, state is saved there every
    `config.checkpoint_every` steps; `resume=True` continues from it, replaying the same batch order (the plan
    is a pure function of the seed), so a killed run ends exactly as an uninterrupted one. With `config.log`,
    each step is logged under `log_dir` (default: the checkpoint's folder).
    """
    if not examples:
        raise ValueError("no training examples")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    epochs = math.ceil(config.epochs)
    plan = [_batches(examples, config, pad_id, rng) for _ in range(epochs)]
    batches = [b for epoch in plan for b in epoch][: max(1, round(len(plan[0]) * config.epochs))]
    total_steps = math.ceil(len(batches) / config.grad_accum)
    distill = getattr(model, "distill", 0.0)  # methods with a distillation target (prefix) set its weight
    fingerprint = _fingerprint(examples, config, distill)
    result = TrainResult()
    if resume and checkpoint and checkpoint.exists():
        result = load_checkpoint(checkpoint, model, optimizer, fingerprint)
        result.resumed_from = result.steps
    log_dir = log_dir or (checkpoint.parent if checkpoint else Path("runs") / "train")
    tracker = open_tracker(config.log, log_dir, log_dir.name, dataclasses.asdict(config))
    model.train()
    start = time.perf_counter() - result.wall_s
    closing = contextlib.closing(tracker) if tracker else contextlib.nullcontext()
    with MicroStep(model, config, total_steps - result.steps, distill) as micro_step, closing:
        for step in range(result.steps, total_steps):
            step_start, step_tokens = time.perf_counter(), result.tokens
            micro = batches[step * config.grad_accum : (step + 1) * config.grad_accum]
            n_labels = max(1, sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro))
            step_loss = 0.0
            for batch in micro:
                n = int((batch["labels"][:, 1:] != -100).sum())
                loss, _ = micro_step(batch, scale=n / n_labels)  # micro-batches weigh by labelled positions
                step_loss += loss * n / n_labels
                result.tokens += batch["n_tokens"]
                result.trained_tokens += n
            torch.nn.utils.clip_grad_norm_(params, config.clip)
            lr = lr_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps = step + 1
            result.losses.append(step_loss)
            result.wall_s = time.perf_counter() - start
            if checkpoint and config.checkpoint_every and result.steps % config.checkpoint_every == 0:
                save_checkpoint(checkpoint, model, optimizer, result, fingerprint)
            if tracker:
                tokens_per_s = (result.tokens - step_tokens) / (time.perf_counter() - step_start)
                tracker.log(result.steps, {"loss": step_loss, "lr": lr, "tokens_per_s": tokens_per_s})
            if progress:
                progress(step + 1, total_steps, {"loss": step_loss, "tok/s": result.tokens_per_s})
    model.eval()
    return result


def _batches(examples: list[Example], config: TrainConfig, pad_id: int, rng: random.Random) -> list[dict]:
    if config.pack:
        return pack_batches(examples, config.batch_tokens, config.pack_width, pad_id, rng)
    return make_batches(examples, config.batch_tokens, pad_id, rng)


def _fingerprint(examples: list[Example], config: TrainConfig, distill: float) -> str:
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("log", "threads")}  # no effect
    settings["distill"] = distill
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for e in examples:
        digest.update(e.record_id.encode())
    return digest.hexdigest()[:16]
