"""How one micro-batch computes: bf16 mixed precision and compiled kernels, shared by the loop, bench and doctor.

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
  attention are restored after training, so answering afterwards runs as before. The loss's element-wise
  kernels compile too for large vocabularies (imprint.train.loss).

Compiled code is not trusted blindly: compilers generate different code per CPU, and on one of ours (AVX512-BF16
without AMX) compiled layers produced NaN from the second step on. So the first micro-step that uses anything
compiled *proves* it: the same batch runs eagerly and compiled, and the loss, gradient norm and gradient
direction must agree within the compute dtype's tolerance and be finite. On a mismatch imprint finds which part
disagrees (layers or loss kernels), trains that part eagerly with a one-line warning saying why, and remembers
the verdict for this machine so `train.compile=auto` does not compile what failed before. A non-finite step later
in the run falls back the same way (the loop redoes the step eagerly).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import warnings
from dataclasses import dataclass

import torch

from imprint.errors import ImprintWarning
from imprint.models import cache_root, preferred_dtype, wants_autocast
from imprint.train.config import TrainConfig
from imprint.train.loss import causal_lm_loss, compiles_loss

# 'auto' compiles where it pays: compiling takes about a minute here, and saves a share of every step
COMPILE_MIN_PARAMS = 50_000_000  # smaller models (tests' tiny one) compile for longer than they train
COMPILE_MIN_STEPS = 50  # a short run (a handful of facts) would spend more time compiling than it saves
# Agreement of a compiled step with the eager one: (loss rtol, gradient-norm rtol, minimum gradient cosine).
# bf16 keeps 8 bits of mantissa, and a compiled graph may reorder its reductions, so whole-step results differ
# by up to ~1% there; fp32 agrees to ~1e-5, and anything past 1e-3 is a wrong kernel, not rounding.
TOLERANCE = {torch.bfloat16: (3e-2, 5e-2, 0.99), torch.float32: (1e-3, 2e-3, 0.9999)}


class CompileFallback(ImprintWarning):
    """Compiled code disagreed with eager code (or failed): that part trains eagerly."""


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


def compute_dtype(model: torch.nn.Module, config: TrainConfig) -> torch.dtype:
    """The precision the step's matmuls run in: bf16 under autocast or on a bf16 model, else fp32."""
    if uses_autocast(model, config):
        return torch.bfloat16
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    return torch.bfloat16 if torch.bfloat16 in frozen else torch.float32


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(_unwrap(model).get_decoder().layers)


# ---- what this machine's compiler did before ------------------------------------------------------------------


def machine_key(backend: str, dtype: torch.dtype) -> str:
    """What a compile verdict depends on: torch, the CPU's vector ISA (or the GPU), the backend and the dtype."""
    if torch.cuda.is_available():
        device = f"cuda:{torch.cuda.get_device_name()}"
    else:
        device = f"cpu:{torch.backends.cpu.get_cpu_capability()}:{platform.machine()}:{cpu_model()}"
    return f"torch {torch.__version__} | {device} | {backend} | {str(dtype).removeprefix('torch.')}"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115 - a short read of a virtual file
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _verdicts_file():
    return cache_root() / "compile-check.json"


def compile_verdict(key: str) -> dict | None:
    """The last recorded check of compiled code for `key` ({ok, reason, ...}), or None."""
    try:
        return json.loads(_verdicts_file().read_text()).get(key)
    except (OSError, ValueError):
        return None


def record_verdict(key: str, ok: bool, reason: str = "") -> None:
    path = _verdicts_file()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    data[key] = {"ok": ok, "reason": reason}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)
    except OSError:  # a read-only cache only loses the memory of the verdict, never the run
        pass


def wants_compile(model: torch.nn.Module, config: TrainConfig, steps: int) -> bool:
    """'auto': runs of 50+ steps on models of 50M+ parameters, except behind a KV prefix (its cache is updated
    layer by layer inside the compiled region) or where the method says its layers do not compile
    (`imprint_compile_layers`, memory), and not where compiled layers failed their check before."""
    if config.compile == "auto":
        big = sum(p.numel() for p in model.parameters()) >= COMPILE_MIN_PARAMS
        compilable = not hasattr(model, "decoder_hidden") and getattr(model, "imprint_compile_layers", True)
        if not (big and steps >= COMPILE_MIN_STEPS and compilable):
            return False
        verdict = compile_verdict(machine_key(config.compile_backend, compute_dtype(model, config)) + " | layers")
        return not failed_check(verdict)
    return config.compile == "on"


def wants_compiled_loss(model: torch.nn.Module, config: TrainConfig) -> bool:
    """Loss kernels compile for large vocabularies unless `train.compile=off` (or they failed their check here)."""
    if config.compile == "off":
        return False
    vocab = _unwrap(model).get_output_embeddings().weight.shape[0]
    if config.compile == "on":
        return True
    if not compiles_loss(vocab, None):
        return False
    verdict = compile_verdict(machine_key(config.compile_backend, compute_dtype(model, config)) + " | loss")
    return not failed_check(verdict)


def failed_check(verdict: dict | None) -> bool:
    """Whether a recorded verdict rules compiled code out here: it computed something else than eager code did.
    A compiler *error* is not remembered against it (it costs seconds to hit again, and may have been the
    machine's state: a C++ compile that failed under heavy load passed in a fresh process on the same host)."""
    return bool(verdict) and not verdict["ok"] and not verdict.get("reason", "").startswith("torch.compile failed")


@dataclass
class Proof:
    """One micro-step's loss, gradient norm and gradients, to compare compiled code against eager code."""

    loss: float
    n: int
    norm: float
    grads: dict

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.norm)

    def disagreement(self, reference: Proof, dtype: torch.dtype) -> str | None:
        """Why this result does not match `reference` (None when it does)."""
        if not self.finite:
            eager = f"eager: {reference.loss:.4g}, {reference.norm:.4g}"
            return f"loss {self.loss:.4g}, gradient norm {self.norm:.4g} ({eager})"
        loss_tol, norm_tol, min_cos = TOLERANCE.get(dtype, TOLERANCE[torch.bfloat16])
        if abs(self.loss - reference.loss) > loss_tol * max(1.0, abs(reference.loss)):
            return f"loss {self.loss:.5g} vs eager {reference.loss:.5g}"
        if abs(self.norm - reference.norm) > norm_tol * max(1e-6, reference.norm):
            return f"gradient norm {self.norm:.5g} vs eager {reference.norm:.5g}"
        dot = sum(float((a.double() * reference.grads[p].double()).sum()) for p, a in self.grads.items())
        cosine = dot / max(1e-30, self.norm * reference.norm)
        if reference.norm > 0 and cosine < min_cos:
            return f"gradient direction differs from eager (cosine {cosine:.4f})"
        return None


def compiler_error(exc: BaseException) -> bool:
    """Whether `exc` is torch.compile's own failure (Dynamo, a backend such as Inductor, its C++ build), not the
    model's or the data's."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InductorError

    return isinstance(exc, TorchDynamoException | InductorError | CppCompileError)


def compile_cause(exc: BaseException) -> str:
    """The root cause of a compiler failure in one line: dynamo wraps it ("backend='inductor' raised:" + the
    inner exception on the next lines)."""
    inner = getattr(exc, "inner_exception", None) or exc.__cause__ or exc
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    detail = next((line for line in lines[1:] if "error" in line.lower()), "")  # e.g. the compiler's own message
    head = lines[0] if lines else repr(inner)
    return f"{type(inner).__name__}: {head}{' | ' + detail if detail else ''}"[:400]


class MicroStep:
    """Forward + backward of micro-batches under the run's precision and compilation; a context manager that
    compiles the decoder layers on entry (when chosen) and restores them on exit.

    `fallbacks` lists why compiled parts were dropped; `compiled` says whether anything compiled is in use."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, steps: int, distill: float = 0.0):
        self.model, self.config, self.distill = model, config, distill
        self.autocast = uses_autocast(model, config)
        self.dtype = compute_dtype(model, config)
        self.compile_layers = wants_compile(model, config, steps)
        self.compile_loss = wants_compiled_loss(model, config)
        self.backend = config.compile_backend
        self.device = next(model.parameters()).device
        self.fallbacks: list[str] = []
        self._compiled: list[torch.nn.Module] = []
        self._forwards: dict[torch.nn.Module, object] = {}  # each compiled layer's compiled forward
        self._attention: str | None = None  # the implementation to restore on exit
        self._proven = False

    @property
    def compiled(self) -> bool:
        return bool(self._compiled) or self.compile_loss

    def describe(self) -> dict:
        """What this run compiled and what fell back, for the module's manifest."""
        return {
            "layers": bool(self._compiled),
            "loss_kernels": self.compile_loss,
            "backend": self.backend,
            "dtype": str(self.dtype).removeprefix("torch."),
            "fallbacks": list(self.fallbacks),
        }

    def __enter__(self) -> MicroStep:
        if self.compile_layers:
            self._compile_layers()
        return self

    def __exit__(self, *exc) -> None:
        self._restore_layers()

    def _compile_layers(self) -> None:
        for layer in decoder_layers(self.model):
            self._compiled.append(layer)
            self._forwards[layer] = torch.compile(layer.forward, backend=self.backend)
        self._use_compiled_layers()

    def _use_compiled_layers(self) -> None:
        if not self._compiled:
            return
        base = _unwrap(self.model)
        if getattr(base.config, "_attn_implementation", None) == "sdpa":
            self._attention = "sdpa"
            base.set_attn_implementation("eager")
        for layer in self._compiled:
            layer.forward = self._forwards[layer]  # an instance attribute: `del` restores the class's

    def _use_eager_layers(self) -> None:
        for layer in self._compiled:
            layer.__dict__.pop("forward", None)
        if self._attention:
            _unwrap(self.model).set_attn_implementation(self._attention)
            self._attention = None

    def _restore_layers(self) -> None:
        self._use_eager_layers()
        self._compiled, self._forwards = [], {}

    @contextlib.contextmanager
    def _eager_layers(self):
        """Decoder layers (and attention) as without compilation, for the duration of a reference step."""
        self._use_eager_layers()
        try:
            yield
        finally:
            self._use_compiled_layers()

    def _context(self):
        stack = contextlib.ExitStack()
        if self.autocast:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if hasattr(self.model, "peft_config"):
                from peft.helpers import disable_input_dtype_casting

                stack.enter_context(disable_input_dtype_casting(self.model))
        return stack

    def _run(self, batch: dict, scale: float, compiled_loss: bool | None = None) -> tuple[float, int]:
        compiled_loss = self.compile_loss if compiled_loss is None else compiled_loss
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with self._context():
            loss, n = causal_lm_loss(
                self.model, batch, self.config.loss_chunk, compiled_loss, self.distill, backend=self.backend
            )
        (loss * scale).backward()
        return loss.item(), n

    def __call__(self, batch: dict, scale: float = 1.0) -> tuple[float, int]:
        """Mean loss of `batch` and its labelled positions; gradients of `scale * loss` accumulate."""
        if self._proven or not self.compiled:
            return self._run(batch, scale)
        self._proven = True
        return self._prove(batch, scale)

    # ---- proving compiled code against eager code ---------------------------------------------------------------

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _trial(self, batch: dict, scale: float, layers: bool, loss: bool) -> Proof:
        """Run the batch with compiled layers and/or loss kernels on or off, from zero gradients."""
        for p in self._params():
            p.grad = None
        context = contextlib.nullcontext() if layers else self._eager_layers()
        with context:
            value, n = self._run(batch, scale, compiled_loss=loss)
        grads = {p: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for p in self._params()}
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))
        return Proof(value, n, norm, grads)

    def _prove(self, batch: dict, scale: float) -> tuple[float, int]:
        """The first compiled micro-step: compare with eager on the same batch; keep only what agrees."""
        before = {p: p.grad for p in self._params()}  # gradients of earlier micro-batches of this step
        layers, loss = bool(self._compiled), self.compile_loss
        reference = self._trial(batch, scale, layers=False, loss=False)
        if not reference.finite:  # eager code is non-finite too: nothing to judge compiled code by; prove later
            self._proven = False
            self._set_grads(before, reference)
            return reference.loss, reference.n
        candidate, problem = self._checked(reference, batch, scale, layers, loss)
        if problem is None:
            self._record(layers, loss, ok=True)
        elif layers and loss:  # find which part disagrees
            loss_ok = self._checked(reference, batch, scale, False, True)[1] is None
            layers_ok = not loss_ok and self._checked(reference, batch, scale, True, False)[1] is None
            self._record(layers_ok, loss_ok, ok=True)
            self._fall_back(not layers_ok, not loss_ok, problem)
        else:
            self._fall_back(layers, loss, problem)
        chosen = candidate if problem is None else reference
        self._set_grads(before, chosen)
        return chosen.loss, chosen.n

    def _set_grads(self, before: dict, chosen: Proof) -> None:
        for p in self._params():
            grad = chosen.grads[p]
            p.grad = grad if before[p] is None else before[p] + grad

    def _checked(self, reference: Proof, batch, scale, layers: bool, loss: bool) -> tuple[Proof | None, str | None]:
        """A trial with the given parts compiled, and why it does not match `reference` (None if it does)."""
        try:
            candidate = self._trial(batch, scale, layers=layers, loss=loss)
        except Exception as exc:  # no working compiler here (no C++ toolchain, unsupported platform)
            return None, f"torch.compile failed: {compile_cause(exc)}"
        return candidate, candidate.disagreement(reference, self.dtype)

    def _record(self, layers: bool, loss: bool, ok: bool, reason: str = "") -> None:
        key = machine_key(self.backend, self.dtype)
        if layers:
            record_verdict(key + " | layers", ok, reason)
        if loss:
            record_verdict(key + " | loss", ok, reason)

    def _fall_back(self, layers: bool, loss: bool, reason: str) -> None:
        parts = [name for name, on in (("decoder layers", layers), ("loss kernels", loss)) if on]
        if not parts:
            return
        what = " and ".join(parts)
        self.fallbacks.append(f"compiled {what}: {reason}")
        failed = "could not be built" if "torch.compile failed" in reason else "failed their check against eager code"
        warnings.warn(
            f"compiled {what} {failed} on this machine ({reason}); training them eagerly (see `imprint doctor`)",
            CompileFallback,
            stacklevel=3,
        )
        self._record(layers, loss, ok=False, reason=reason)
        if layers:
            self._restore_layers()
        if loss:
            self.compile_loss = False

    @contextlib.contextmanager
    def eager(self):
        """Everything eager for the duration (a step redone to tell a compiler fault from a diverging run)."""
        loss = self.compile_loss
        self.compile_loss = False
        try:
            with self._eager_layers():
                yield
        finally:
            self.compile_loss = loss

    def fall_back(self, reason: str) -> bool:
        """Drop everything compiled after a non-finite step or a failed later compile (the loop then redoes the
        step); False if nothing was."""
        if not self.compiled:
            return False
        self._fall_back(bool(self._compiled), self.compile_loss, reason)
        return True
