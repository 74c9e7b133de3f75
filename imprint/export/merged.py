"""A module as one whole Hugging Face model: LoRA folded into the base weights (PEFT's `merge_and_unload`), or a full
fine-tune's trained tensors written into the base. The result is a plain model directory (config, safetensors,
tokenizer, generation config) that `AutoModelForCausalLM.from_pretrained` loads without imprint or PEFT, and the
input of the GGUF writers.

Merging happens in float32 (a bf16 base plus a small LoRA update in bf16 would round much of the update away); the
directory is then saved in the chosen dtype. Prefix and memory modules have no merged form: a learned KV prefix is
not a weight of the base, and memory layers are layers the base architecture does not have.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from imprint.errors import ImprintError

MERGEABLE = ("lora", "full")
NO_MERGED_FORM = {
    "prefix": "its learned KV prefix is not a weight of the base model",
    "memory": "its memory layers are layers the base architecture does not have",
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_mergeable(entry) -> None:
    """Refuse, in one line, a module that has no merged form."""
    if entry.method not in MERGEABLE:
        why = NO_MERGED_FORM.get(entry.method, "imprint knows no merged form for it")
        raise ImprintError(
            f"module {entry.name}@{entry.version} is a {entry.method} module and has no merged form ({why}): "
            "serve it with `imprint serve`"
        )


def merged_model(ws, entry) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer): the module's weights folded into a float32 copy of its base, as a plain transformers
    model (no PEFT wrapper)."""
    from imprint.methods.loading import load_module

    check_mergeable(entry)
    model, tokenizer, _ = load_module(ws, f"{entry.name}@{entry.version}", dtype=torch.float32)
    if entry.method == "lora":
        model = model.merge_and_unload()  # W + (alpha / r) * B @ A in every adapted layer; the adapters are gone
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), tokenizer


def base_dtype(base_model: str) -> torch.dtype:
    """The dtype the base's weights are stored in (float32 for the generated `tiny` model)."""
    from imprint.models import resolve_model_dir

    directory = resolve_model_dir(base_model)
    if directory is None:
        return torch.float32
    config = json.loads((Path(directory) / "config.json").read_text())
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    return _DTYPES.get(str(stored), torch.float32)


def save_dtype(entry, choice: str) -> torch.dtype:
    """`auto`: the base's own dtype for LoRA (what the base ships in), float32 for a full fine-tune (its trained
    tensors are float32: casting them down would round away much of what training changed)."""
    if choice != "auto":
        return _DTYPES[choice]
    return torch.float32 if entry.method == "full" else base_dtype(entry.base_model)


def write_merged(model: torch.nn.Module, tokenizer, directory: Path, dtype: torch.dtype) -> None:
    """The model as a Hugging Face directory: config.json, model.safetensors, generation_config.json, tokenizer."""
    model = model.to(dtype)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise ImprintError(f"the merged weights overflow {str(dtype).removeprefix('torch.')}: export with "
                           "--set export.dtype=float32 (or bfloat16)")  # fmt: skip
    model.config.use_cache = True  # training may have switched it off; a user of the directory wants it on
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
