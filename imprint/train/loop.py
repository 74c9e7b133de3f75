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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from imprint.errors import ImprintError, ImprintWarning, TrainingError
from imprint.integrity import nonfinite_tensors
from imprint.train.compute import MicroStep, compile_cause, compiler_error
from imprint.train.config import TrainConfig
from imprint.train.data import Example, make_batches, pack_batches
from imprint.train.tracking import open_tracker


@dataclass
class TrainResult:
    steps: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    wall_s: float = 0.0
    losses: list[float] = field(default_factory=list)  # one per step; NaN where the step was skipped
    skipped_steps: list[int] = field(default_factory=list)  # steps whose loss or gradient was not finite
    resumed_from: int | None = None
    compile: dict = field(default_factory=dict)  # what was compiled, and why anything fell back to eager
    lr_scale: float = 1.0  # the forgetting budget halves it each time general text drifted past the budget
    drift: list[list[float]] = field(default_factory=list)  # [step, ΔNLL on held-out general text] per check
    stopped: str = ""  # why training ended before its last step (the forgetting budget), else empty

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict:
        k = max(1, len(self.losses) // 10)
        first = [x for x in self.losses[:k] if math.isfinite(x)]
        last = [x for x in self.losses[-k:] if math.isfinite(x)]
        return {
            "steps": self.steps,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "wall_s": round(self.wall_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "loss_first": round(sum(first) / len(first), 4) if first else None,
            "loss_last": round(sum(last) / len(last), 4) if last else None,
            "loss_curve": [round(x, 4) if math.isfinite(x) else None for x in self.losses],
            "skipped_steps": list(self.skipped_steps),
            "resumed_from": self.resumed_from,
            "compile": dict(self.compile),
            "drift": [list(d) for d in self.drift],
            "lr_scale": self.lr_scale,
            "stopped": self.stopped,
        }


class NonFiniteStep(ImprintWarning):
    """A step's loss or gradient was NaN or infinite; it was not applied."""


class OverBudget(ImprintWarning):
    """General text drifted past `train.forget_budget`: the learning rate was halved, or training stopped."""


MIN_LR_SCALE = 1 / 16  # the forgetting budget stops training rather than halve the learning rate below this


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    warm = max(1, int(total * config.warmup))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, result: TrainResult, fingerprint: str) -> None:
    """Trainable weights, optimizer moments, RNG and counters, written atomically (a kill mid-write is harmless).

    A state holding a non-finite weight is never written: the last good checkpoint stays the one to resume."""
    bad = nonfinite_tensors((n, p) for n, p in model.named_parameters() if p.requires_grad)
    if bad:
        raise TrainingError(
            f"training stopped at step {result.steps}: weight {bad[0]} is not finite; checkpoint {path} was not "
            "overwritten"
        )
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
    saved = state["result"]
    return TrainResult(**{k: v for k, v in saved.items() if k in {f.name for f in dataclasses.fields(TrainResult)}})


def train(
    model: torch.nn.Module,
    examples: list[Example],
    pad_id: int,
    config: TrainConfig,
    progress=None,
    checkpoint: Path | None = None,
    resume: bool = False,
    log_dir: Path | None = None,
    drift=None,
    distill: float | None = None,
):
    """Train the model's trainable parameters on `examples`; returns a TrainResult.

    `drift(model) -> float` (with `config.forget_budget`) measures how far the model moved from the base on
    general text (ΔNLL, nats/token); it is called every `config.forget_every` steps, and past the budget the
    learning rate is halved (a 16th: training stops, and the result says so). `distill` weighs the teacher targets
    some examples carry (prefix context distillation, `train.replay_distill`) against their own next token.

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
    make_optimizer = getattr(model, "imprint_optimizer", None)  # a method that updates its own way (memory: rows)
    if make_optimizer is not None:
        optimizer = make_optimizer(params, config)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    epochs = math.ceil(config.epochs)
    plan = [_batches(examples, config, pad_id, rng) for _ in range(epochs)]
    batches = [b for epoch in plan for b in epoch][: max(1, round(len(plan[0]) * config.epochs))]
    total_steps = math.ceil(len(batches) / config.grad_accum)
    if distill is None:  # the loss's weight on examples' teacher targets; a method's own (prefix) by default
        distill = getattr(model, "distill", 0.0)
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
    in_a_row = 0  # consecutive non-finite steps
    with MicroStep(model, config, total_steps - result.steps, distill) as micro_step, closing:
        for step in range(result.steps, total_steps):
            step_start, step_tokens = time.perf_counter(), result.tokens
            micro = batches[step * config.grad_accum : (step + 1) * config.grad_accum]
            try:
                step_loss, grad_norm = _forward_backward(micro_step, micro, params, config)
            except Exception as exc:  # a later compile (a new batch shape) can fail where the first one worked
                if not (micro_step.compiled and compiler_error(exc)):
                    raise
                optimizer.zero_grad(set_to_none=True)  # this step's partial gradients; the weights are untouched
                micro_step.fall_back(f"step {step + 1}: torch.compile failed: {compile_cause(exc)}")
                step_loss, grad_norm = _forward_backward(micro_step, micro, params, config)
            finite = math.isfinite(step_loss) and math.isfinite(grad_norm)
            if not finite and micro_step.compiled:  # redo the step eagerly, from the same weights
                why = f"step {step + 1}: loss {step_loss:.4g}, gradient norm {grad_norm:.4g}"
                optimizer.zero_grad(set_to_none=True)
                with micro_step.eager():
                    step_loss, grad_norm = _forward_backward(micro_step, micro, params, config)
                finite = math.isfinite(step_loss) and math.isfinite(grad_norm)
                if finite:  # eager code is fine where compiled code was not: the compiler is at fault
                    micro_step.fall_back(why)
                # else eager code is non-finite too: the data or the settings are at fault, not the compiler
            for batch in micro:
                result.tokens += batch["n_tokens"]
                result.trained_tokens += int((batch["labels"][:, 1:] != -100).sum())
            lr = lr_at(step, total_steps, config) * result.lr_scale
            if finite:
                in_a_row = 0
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.step()
            else:  # not applied: weights and optimizer moments stay as they were
                in_a_row += 1
                result.skipped_steps.append(step + 1)
                warnings.warn(
                    f"step {step + 1} skipped: loss {step_loss:.4g}, gradient norm {grad_norm:.4g} "
                    f"({in_a_row} in a row; weights and optimizer state untouched)",
                    NonFiniteStep,
                    stacklevel=2,
                )
            optimizer.zero_grad(set_to_none=True)
            result.steps = step + 1
            result.losses.append(step_loss if finite else float("nan"))
            result.wall_s = time.perf_counter() - start
            result.compile = micro_step.describe()
            if in_a_row >= config.max_nonfinite:
                raise TrainingError(_stop_message(result, step_loss, in_a_row, checkpoint, config))
            if drift and config.forget_budget and result.steps % config.forget_every == 0:
                _watch_drift(drift, model, micro_step, result, config)
            if checkpoint and config.checkpoint_every and result.steps % config.checkpoint_every == 0 and not in_a_row:
                save_checkpoint(checkpoint, model, optimizer, result, fingerprint)
            if tracker:
                tokens_per_s = (result.tokens - step_tokens) / (time.perf_counter() - step_start)
                metrics = {"loss": step_loss, "lr": lr, "tokens_per_s": tokens_per_s, "grad_norm": grad_norm}
                tracker.log(result.steps, {**metrics, "skipped": len(result.skipped_steps)})
            if progress:
                info = {"loss": step_loss, "tok/s": result.tokens_per_s}
                if result.skipped_steps:
                    info["skipped"] = len(result.skipped_steps)
                progress(step + 1, total_steps, info)
            if result.stopped:
                break
    model.eval()
    return result


def _watch_drift(drift, model, micro_step: MicroStep, result: TrainResult, config: TrainConfig) -> None:
    """The forgetting budget: measure drift on held-out general text; past the budget halve the lr, or stop."""
    with micro_step.eager():  # a no-grad eval forward would make compiled layers recompile
        delta = float(drift(model))
    model.train()
    result.drift.append([result.steps, round(delta, 4)])
    if delta <= config.forget_budget:
        return
    if result.lr_scale / 2 < MIN_LR_SCALE:
        result.stopped = (
            f"forgetting budget: general-text ΔNLL {delta:.3f} > {config.forget_budget} at step {result.steps} "
            f"with the learning rate already at {result.lr_scale:g} of its schedule"
        )
        warnings.warn(f"training stopped early: {result.stopped}", OverBudget, stacklevel=3)
        return
    result.lr_scale /= 2
    warnings.warn(
        f"step {result.steps}: general-text ΔNLL {delta:.3f} nats/token is over train.forget_budget "
        f"{config.forget_budget}: learning rate halved (now {result.lr_scale:g} of its schedule)",
        OverBudget,
        stacklevel=3,
    )


def _forward_backward(micro_step: MicroStep, micro: list[dict], params, config: TrainConfig) -> tuple[float, float]:
    """One optimizer step's micro-batches, forward and backward: (mean loss, gradient norm before clipping).

    Gradients are clipped to `config.clip` in place; a non-finite norm leaves them for the caller to discard."""
    n_labels = max(1, sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro))
    step_loss = 0.0
    for batch in micro:
        n = int((batch["labels"][:, 1:] != -100).sum())
        loss, _ = micro_step(batch, scale=n / n_labels)  # micro-batches weigh by labelled positions
        step_loss += loss * n / n_labels
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.clip))
    return step_loss, grad_norm


def _stop_message(result: TrainResult, loss: float, in_a_row: int, checkpoint: Path | None, config) -> str:
    resumable = ""
    if checkpoint and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False, map_location="cpu")["step"]
        resumable = f"; the checkpoint of step {saved} is resumable (--resume)"
    tried = "compiled code already fell back to eager; " if result.compile.get("fallbacks") else ""
    return (
        f"training stopped at step {result.steps}: loss {loss:.4g}, {in_a_row} non-finite steps in a row "
        f"(train.max_nonfinite={config.max_nonfinite}){resumable}. {tried}Try --set train.compile=off, "
        f"--set train.autocast=false, or a lower train.lr (now {config.lr:g}; a new lr starts over)"
    )


def _batches(examples: list[Example], config: TrainConfig, pad_id: int, rng: random.Random) -> list[dict]:
    if config.pack:
        return pack_batches(examples, config.batch_tokens, config.pack_width, pad_id, rng)
    return make_batches(examples, config.batch_tokens, pad_id, rng)


# Settings that change how a step computes, not what it computes: a run may resume under other values (e.g.
# train.compile=off after compiled code failed), so they stay out of the checkpoint's fingerprint.
EXECUTION_SETTINGS = ("log", "threads", "compile", "compile_backend", "autocast", "max_nonfinite", "verify", "verify_n")


def _fingerprint(examples: list[Example], config: TrainConfig, distill: float) -> str:
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in EXECUTION_SETTINGS}
    settings["distill"] = distill
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for e in examples:
        digest.update(e.record_id.encode())
    return digest.hexdigest()[:16]
