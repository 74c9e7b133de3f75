"""The training loop, top to bottom: data -> forward -> loss -> step -> log. No Trainer, no callbacks.

bf16 weights on CPUs that multiply bf16 natively (AMX here: ~8x fp32); trainable parameters stay fp32 (PEFT
keeps adapters in fp32), AdamW with linear warm-up and cosine decay, gradient accumulation and clipping.
"""

from __future__ import annotations

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
from imprint.models import wants_autocast
from imprint.train.config import TrainConfig
from imprint.train.data import Example, make_batches
from imprint.train.loss import causal_lm_loss


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
):
    """Train the model's trainable parameters on `examples`; returns a TrainResult.

    `progress(done, total, info)` is called after each step. With `checkpoint`, state is saved there every
    `config.checkpoint_every` steps; `resume=True` continues from it, replaying the same batch order (the plan
    is a pure function of the seed), so a killed run ends exactly as an uninterrupted one.
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
    plan = [make_batches(examples, config.batch_tokens, pad_id, rng) for _ in range(epochs)]
    batches = [b for epoch in plan for b in epoch][: max(1, round(len(plan[0]) * config.epochs))]
    total_steps = math.ceil(len(batches) / config.grad_accum)
    fingerprint = _fingerprint(examples, config)
    result = TrainResult()
    if resume and checkpoint and checkpoint.exists():
        result = load_checkpoint(checkpoint, model, optimizer, fingerprint)
        result.resumed_from = result.steps
    device = next(model.parameters()).device
    use_autocast = config.autocast and wants_autocast(model)
    model.train()
    start = time.perf_counter() - result.wall_s
    for step in range(result.steps, total_steps):
        micro = batches[step * config.grad_accum : (step + 1) * config.grad_accum]
        n_labels = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
        step_loss = 0.0
        for batch in micro:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                loss, n = causal_lm_loss(model, batch, config.loss_chunk)
            (loss * (n / max(1, n_labels))).backward()  # weight micro-batches by their labelled positions
            step_loss += loss.item() * n / max(1, n_labels)
            result.tokens += batch["n_tokens"]
            result.trained_tokens += n
        torch.nn.utils.clip_grad_norm_(params, config.clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, config)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.steps = step + 1
        result.losses.append(step_loss)
        result.wall_s = time.perf_counter() - start
        if checkpoint and config.checkpoint_every and result.steps % config.checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer, result, fingerprint)
        if progress:
            progress(step + 1, total_steps, {"loss": step_loss, "tok/s": result.tokens_per_s})
    model.eval()
    return result


def _fingerprint(examples: list[Example], config: TrainConfig) -> str:
    digest = hashlib.sha1(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    for e in examples:
        digest.update(e.record_id.encode())
    return digest.hexdigest()[:16]
