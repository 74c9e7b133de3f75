"""How one micro-batch computes: bf16 mixed precision and compiled decoder layers, shared by the loop and bench.

- bf16 autocast whenever trainable fp32 weights sit beside bf16 compute, as HF Trainer's `bf16=True` does:
  full fine-tuning (fp32 master weights), and LoRA/prefix on a bf16 base (PEFT keeps adapters in fp32). For
  PEFT, the adapters' own input upcast is switched off (`peft.helpers.disable_input_dtype_casting`), so each
  adapter multiplies bf16 activations by its weights cast once to bf16 instead of copying every activation to
  fp32 and running the adapter matmuls at fp32 speed (an eighth of bf16 on AMX).
- `torch.compile` of each decoder layer (`train.compile`): fuses the element-wise work around the matmuls
  (RMSNorm's fp32 round trips, rotary, GELU, residuals, adapter scaling) that eager PyTorch runs as separate
  passes over memory. Compiled layers also switch attention from SDPA to transformers' "eager" attention
  (matmuls + softmax, which Inductor fuses with the packed rows' block-diagonal mask): with rows of 256 tokens
  and 4 heads, PyTorch's CPU flash-attention kernel runs these small problems slower than plain matmuls, and
  the switch made the whole step 7% faster (gemma-3-270m, 2-core AVX512 CPU, 2026-11-25). The layers and the
  attention are restored after training, so answering afterwards runs as before.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from imprint.models import preferred_dtype, wants_autocast
from imprint.train.config import TrainConfig
from imprint.train.loss import causal_lm_loss

# 'auto' compiles where it pays: compiling takes about a minute here, and saves a share of every step
COMPILE_MIN_PARAMS = 50_000_000  # smaller models (tests' tiny one) compile for longer than they train
COMPILE_MIN_STEPS = 50  # a short run (a handful of facts) would spend more time compiling than it saves


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT and prefix models


def uses_autocast(model: torch.nn.Module, config: TrainConfig) -> bool:
    """bf16 autocast for fp32 master weights (full) and for fp32 trainables on a bf16 base (LoRA, prefix)."""
    if not config.autocast or preferred_dtype() != torch.bfloat16:
        return False
    if wants_autocast(model):
        return True
    dtypes = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    return torch.bfloat16 in dtypes and torch.float32 in trainable


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(_unwrap(model).get_decoder().layers)


def wants_compile(model: torch.nn.Module, config: TrainConfig, steps: int) -> bool:
    """'auto': runs of 50+ steps on models of 50M+ parameters, except behind a KV prefix (its cache is updated
    layer by layer inside the compiled region)."""
    if config.compile == "auto":
        big = sum(p.numel() for p in model.parameters()) >= COMPILE_MIN_PARAMS
        return big and steps >= COMPILE_MIN_STEPS and not hasattr(model, "decoder_hidden")
    return config.compile == "on"


class MicroStep:
    """Forward + backward of micro-batches under the run's precision and compilation; a context manager that
    compiles the decoder layers on entry (when chosen) and restores them on exit."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, steps: int, distill: float = 0.0):
        self.model, self.config, self.distill = model, config, distill
        self.autocast = uses_autocast(model, config)
        self.compile = wants_compile(model, config, steps)
        self.device = next(model.parameters()).device
        self._compiled: list[torch.nn.Module] = []
        self._attention: str | None = None  # the implementation to restore on exit
        self._proven = False

    def __enter__(self) -> MicroStep:
        if self.compile:
            base = _unwrap(self.model)
            if getattr(base.config, "_attn_implementation", None) == "sdpa":
                self._attention = "sdpa"
                base.set_attn_implementation("eager")
            for layer in decoder_layers(self.model):
                layer.forward = torch.compile(layer.forward)  # an instance attribute: `del` restores the class's
                self._compiled.append(layer)
        return self

    def __exit__(self, *exc) -> None:
        for layer in self._compiled:
            del layer.forward
        self._compiled = []
        if self._attention:
            _unwrap(self.model).set_attn_implementation(self._attention)
            self._attention = None

    def _context(self):
        stack = contextlib.ExitStack()
        if self.autocast:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if hasattr(self.model, "peft_config"):
                from peft.helpers import disable_input_dtype_casting

                stack.enter_context(disable_input_dtype_casting(self.model))
        return stack

    def _run(self, batch: dict, scale: float) -> tuple[float, int]:
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with self._context():
            loss, n = causal_lm_loss(self.model, batch, self.config.loss_chunk, distill=self.distill)
        (loss * scale).backward()
        return loss.item(), n

    def __call__(self, batch: dict, scale: float = 1.0) -> tuple[float, int]:
        """Mean loss of `batch` and its labelled positions; gradients of `scale * loss` accumulate."""
        if self._proven or not self._compiled:
            return self._run(batch, scale)
        try:  # the first call compiles: a machine without a working compiler trains eagerly instead
            out = self._run(batch, scale)
        except Exception as exc:
            warnings.warn(f"torch.compile failed ({str(exc).splitlines()[0]}); training eagerly", stacklevel=2)
            self.__exit__()
            for p in self.model.parameters():
                p.grad = None
            out = self._run(batch, scale)
        self._proven = True
        return out
