"""The training loop, top to bottom: data -> forward -> loss -> step -> log. No Trainer, no callbacks.

bf16 weights on CPUs that multiply bf16 natively (AMX here: ~8x fp32); trainable parameters stay fp32 (PEFT
keeps adapters in fp32), AdamW with linear warm-up and cosine decay, gradient accumulation and clipping.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch

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
        }


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    warm = max(1, int(total * config.warmup))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(model: torch.nn.Module, examples: list[Example], pad_id: int, config: TrainConfig, progress=None):
    """Train the model's trainable parameters on `examples`; returns a TrainResult. `progress(done, total, info)`."""
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
    result = TrainResult()
    model.train()
    start = time.perf_counter()
    for step in range(total_steps):
        micro = batches[step * config.grad_accum : (step + 1) * config.grad_accum]
        n_labels = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
        step_loss = 0.0
        for batch in micro:
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
        if progress:
            progress(step + 1, total_steps, {"loss": step_loss, "tok/s": result.tokens_per_s})
    model.eval()
    return result
