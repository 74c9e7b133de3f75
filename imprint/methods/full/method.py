"""Full fine-tuning. Weights are kept in fp32 (bf16 cannot hold small AdamW updates) while the loop and the
answers compute in bf16 under autocast where the hardware has it; the module file holds only the trained
tensors, in fp32, so loading it on a fresh base reproduces the trained model's logits exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from imprint.errors import ImprintError
from imprint.methods.full.config import FullMethodConfig
from imprint.models import mark_autocast

WEIGHTS = "full_weights.safetensors"
CONFIG = "full_config.json"


def _embedding_ids(model: torch.nn.Module) -> set[int]:
    ids = {id(model.get_input_embeddings().weight)}
    out = model.get_output_embeddings()
    if out is not None:
        ids.add(id(out.weight))
    return ids


def _trainable_names(model: torch.nn.Module, config: FullMethodConfig) -> list[str]:
    frozen = _embedding_ids(model) if config.freeze_embeddings else set()
    return [name for name, p in model.named_parameters() if id(p) not in frozen]


def _to_fp32(model: torch.nn.Module) -> None:
    """The whole model in fp32 (frozen embeddings too, so a plain forward works); autocast computes in bf16."""
    for p in model.parameters():
        if p.dtype not in (torch.float32, torch.float64):
            p.data = p.data.float()


class FullMethod:
    name = "full"
    config_class = FullMethodConfig
    default_lr = 3e-5  # every weight moves: the usual full fine-tuning rate for a small model

    def attach(self, model: torch.nn.Module, config: FullMethodConfig, tokenizer=None, corpus_text: str = ""):
        names = set(_trainable_names(model, config))
        for name, p in model.named_parameters():
            p.requires_grad_(name in names)
        _to_fp32(model)
        mark_autocast(model)  # fp32 master weights beside a bf16 base: compute in bf16 (see models.py)
        return model

    def save(self, model: torch.nn.Module, directory: Path) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, str(directory / WEIGHTS))
        (directory / CONFIG).write_text(json.dumps({"tensors": sorted(trained)}, indent=2))
        return [CONFIG, WEIGHTS]

    def serving_bytes(self, directory: Path, base) -> int:
        return sum(p.numel() for p in base.model.parameters()) * 4  # a whole model copy in fp32

    def join(self, host, key: str, directory: Path):
        """Into serving: a whole model of its own (fp32, as trained) on a fresh copy of the base; its rows form a
        batch of their own."""
        from imprint.inference.modules import Joined, tensor_bytes
        from imprint.models import load_base

        model = self.load(load_base(host.base.name).model, directory)
        return Joined(key, self.name, tensor_bytes([*model.parameters(), *model.buffers()]), model=model)

    def load(self, model: torch.nn.Module, directory: Path, trainable: bool = False) -> torch.nn.Module:
        tensors = load_file(str(directory / WEIGHTS))
        params = dict(model.named_parameters())
        missing = sorted(set(tensors) - set(params))
        if missing:
            raise ImprintError(f"module {directory} does not fit this base model (no parameter {missing[0]})")
        _to_fp32(model)
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].data = value.to(params[name].device)
        if trainable:  # exactly the tensors that were trained train again
            for name, p in params.items():
                p.requires_grad_(name in tensors)
        mark_autocast(model)
        if not trainable:
            model.eval()
        return model
