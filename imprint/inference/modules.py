"""Modules joined to one shared base model, so rows of different modules can decode in one batch.

How a module joins is its method's business (`Method.join`, in the method's folder, reached through
`imprint.methods.loading.join`), so a new method needs no edit here or in the server. What a method can ask of the
host:
- `add_lora(directory)`: load a PEFT LoRA adapter into the shared model under a fresh adapter name (through the
  segmented `LoraBank`, or PEFT's own mixed batches with `lora_backend="peft"`); rows name it as their `adapter`.
- `base`: the shared base model, e.g. to read a KV prefix in its dtype, or to load a whole fine-tuned copy.
A joined module (`Joined`) then says where its rows run: an `adapter` in the shared model, a KV `prefix` in front
of each row, or a `model` of its own (full fine-tunes: their rows form a batch of their own).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from imprint.errors import ImprintError
from imprint.inference.multilora import LoraBank
from imprint.models import BaseModel


@dataclass
class Joined:
    key: str  # name@version
    method: str
    nbytes: int  # memory it takes once joined
    adapter: str | None = None  # LoRA: the adapter name its rows carry
    prefix: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # prefix: per-layer keys, values
    model: torch.nn.Module | None = None  # a whole model of its own


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def file_bytes(directory: Path) -> int:
    """What a module's tensors take once loaded as saved: its safetensors files' size."""
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


class PeftRouter:
    """PEFT's own mixed-adapter batches: `adapter_names=[...]`, one per row, passed to the forward."""

    def __init__(self, model):
        self.model = model

    @contextlib.contextmanager
    def route(self, adapters: list[str]):
        yield {"adapter_names": adapters}


class ModuleHost:
    """One base model and the modules joined to it."""

    def __init__(self, base: BaseModel, lora_backend: str = "segmented"):
        if lora_backend not in ("segmented", "peft"):
            raise ImprintError(f"unknown lora_backend {lora_backend!r}: use segmented or peft")
        self.base = base
        self.lora_backend = lora_backend
        self.peft = None  # lora_backend=peft: the PEFT wrapper, made when the first LoRA module joins
        self.bank: LoraBank | None = None  # lora_backend=segmented
        self._adapters = 0

    @property
    def shared_model(self) -> torch.nn.Module:
        """The model base, LoRA and prefix rows run on (once wrapped by PEFT, always through the wrapper: its
        LoRA layers replace the base's linear layers in place, as the bank's layers do)."""
        return self.peft if self.peft is not None else self.base.model

    @property
    def router(self):
        """What applies each row's adapter in the shared model's forward (None while no LoRA was loaded)."""
        if self.peft is not None:
            return PeftRouter(self.peft)
        return self.bank

    def leave(self, joined: Joined) -> None:
        """Undo `join` (a prefix or a model of its own is simply dropped)."""
        if joined.adapter is not None and self.bank is not None:
            self.bank.unload(joined.adapter)
        elif joined.adapter is not None:
            self.peft.delete_adapter(joined.adapter)

    def add_lora(self, directory: Path) -> tuple[str, int]:
        """Load the PEFT LoRA adapter in `directory` into the shared model: (its adapter name, its bytes)."""
        from peft import PeftModel

        self._adapters += 1
        adapter = f"m{self._adapters}"  # PEFT adapter names become module attributes: no '.' or '@'
        if self.lora_backend == "segmented":
            self.bank = self.bank or LoraBank(self.base.model)
            return adapter, self.bank.load(adapter, directory)
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base.model, str(directory), adapter_name=adapter)
        else:
            self.peft.load_adapter(str(directory), adapter_name=adapter)
        self.peft.eval()
        marker = f".{adapter}."
        return adapter, tensor_bytes(p for n, p in self.peft.named_parameters() if marker in n)

    def placement(self, joined: Joined | None) -> tuple[torch.nn.Module, object, dict]:
        """Where a joined module's rows run: (model, router, row fields) for `inference.generate` or a `Batch`."""
        if joined is not None and joined.model is not None:
            return joined.model, None, {}
        fields = {}
        if joined is not None and joined.adapter is not None:
            fields["adapter"] = joined.adapter
        if joined is not None and joined.prefix is not None:
            fields["prefix"] = joined.prefix
        return self.shared_model, self.router, fields
