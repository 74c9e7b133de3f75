"""Modules loaded on first use and kept in an LRU cache under a memory budget, all sharing one base model.

What a loaded module costs, and how it is served:
- `lora`: one named adapter inside a single PEFT model wrapped around the shared base, so rows of different
  adapters run in one forward pass (PEFT mixed-adapter batches). Bytes: the adapter's tensors.
- `prefix`: its per-layer key/value tensors, handed to the engine per row. Bytes: those tensors.
- `full`: a separate copy of the whole model with the trained weights (fp32, as the method keeps them), counted
  at its full size; its rows run as their own batch.
- `memory`: the same way, a base copy with the memory layers hooked on (the hooks change the model they are on,
  so they cannot ride on the shared one); counted as the copy plus the memory tensors.
The budget counts modules only (the base model is always resident). Modules a running batch uses are pinned and
never evicted under it. Everything here runs on the scheduler's single worker thread.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from imprint.errors import ImprintError
from imprint.methods.integrity import check_module_files
from imprint.models import BaseModel, load_base
from imprint.serve.multilora import LoraBank


class ModuleTooLarge(ImprintError):
    """A module cannot fit the memory budget: never (`fits_alone` False), or not next to the pinned ones."""

    def __init__(self, message: str, fits_alone: bool):
        super().__init__(message)
        self.fits_alone = fits_alone


@dataclass
class LoadedModule:
    key: str  # name@version
    method: str
    nbytes: int
    adapter: str | None = None  # lora: the PEFT adapter name
    prefix: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # prefix: per-layer keys, values
    model: torch.nn.Module | None = None  # full, memory: its own model


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def estimate_bytes(method: str, directory: Path, base: BaseModel) -> int:
    """Memory a module will take once loaded, known before loading it (to evict first, not after)."""
    files = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
    if method == "full":  # a whole model copy in fp32
        return sum(p.numel() for p in base.model.parameters()) * 4
    if method == "memory":  # a base copy as loaded, plus the memories
        return _tensor_bytes(base.model.parameters()) + files
    return files


class PeftRouter:
    """PEFT's own mixed-adapter batches: `adapter_names=[...]`, one per row, passed to the forward."""

    def __init__(self, model):
        self.model = model

    @contextlib.contextmanager
    def route(self, adapters: list[str]):
        yield {"adapter_names": adapters}


class ModuleCache:
    def __init__(self, base: BaseModel, budget_bytes: int, lora_backend: str = "segmented"):
        if lora_backend not in ("segmented", "peft"):
            raise ImprintError(f"unknown lora_backend {lora_backend!r}: use segmented or peft")
        self.base = base
        self.budget = int(budget_bytes)
        self.lora_backend = lora_backend
        self.loaded: OrderedDict[str, LoadedModule] = OrderedDict()  # least recently used first
        self.peft = None  # lora_backend=peft: the PEFT wrapper, made when the first LoRA module loads
        self.bank: LoraBank | None = None  # lora_backend=segmented
        self._adapters = 0
        self.loads = 0
        self.evictions = 0

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

    @property
    def used(self) -> int:
        return sum(m.nbytes for m in self.loaded.values())

    def get(self, key: str, method: str, directory: Path, pinned: set[str] = frozenset()) -> LoadedModule:
        """The loaded module `key`, loading it (and evicting least recently used unpinned ones) if needed."""
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        need = estimate_bytes(method, directory, self.base)
        self._make_room(need, pinned, key)
        module = self._load(key, method, directory)
        self.loads += 1
        self.loaded[key] = module
        self._make_room(0, pinned | {key}, key)  # the estimate was off: settle with the measured size
        return module

    def _make_room(self, need: int, pinned: set[str], key: str) -> None:
        budget_mb = self.budget / 2**20
        if need > self.budget:
            raise ModuleTooLarge(
                f"module {key} needs {need / 2**20:.0f} MB, more than the whole module budget ({budget_mb:.0f} MB): "
                "restart the server with a larger --max-loaded-mb",
                fits_alone=False,
            )
        for victim in [k for k in self.loaded if k not in pinned]:
            if self.used + need <= self.budget:
                break
            self.evict(victim)
        if self.used + need > self.budget:
            raise ModuleTooLarge(
                f"module {key} ({need / 2**20:.0f} MB) does not fit the module budget ({budget_mb:.0f} MB) next to "
                "the modules the running batch uses",
                fits_alone=True,
            )

    def evict(self, key: str) -> None:
        module = self.loaded.pop(key)
        self.evictions += 1
        if module.adapter is not None and self.bank is not None:
            self.bank.unload(module.adapter)
        elif module.adapter is not None:
            self.peft.delete_adapter(module.adapter)

    def _load(self, key: str, method: str, directory: Path) -> LoadedModule:
        check_module_files(directory)  # a module with a NaN is refused, never served
        if method == "lora":
            return self._load_lora(key, directory)
        if method == "prefix":
            return self._load_prefix(key, directory)
        if method in ("full", "memory"):
            return self._load_own_model(key, method, directory)
        raise ImprintError(f"module {key} uses method {method!r}, which the server cannot serve")

    def _load_lora(self, key: str, directory: Path) -> LoadedModule:
        from peft import PeftModel

        self._adapters += 1
        adapter = f"m{self._adapters}"  # PEFT adapter names become module attributes: no '.' or '@'
        if self.lora_backend == "segmented":
            self.bank = self.bank or LoraBank(self.base.model)
            return LoadedModule(key, "lora", self.bank.load(adapter, directory), adapter=adapter)
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base.model, str(directory), adapter_name=adapter)
        else:
            self.peft.load_adapter(str(directory), adapter_name=adapter)
        self.peft.eval()
        marker = f".{adapter}."
        nbytes = _tensor_bytes(p for n, p in self.peft.named_parameters() if marker in n)
        return LoadedModule(key, "lora", nbytes, adapter=adapter)

    def _load_prefix(self, key: str, directory: Path) -> LoadedModule:
        from safetensors.torch import load_file

        from imprint.methods.prefix.method import CONFIG, WEIGHTS

        layers = json.loads((directory / CONFIG).read_text())["layers"]
        tensors = load_file(str(directory / WEIGHTS))
        device = next(self.base.model.parameters()).device
        dtype = self.base.model.get_input_embeddings().weight.dtype  # as PrefixModel casts its cache
        keys = [tensors[f"keys.{i}"].to(device, dtype) for i in range(layers)]
        values = [tensors[f"values.{i}"].to(device, dtype) for i in range(layers)]
        return LoadedModule(key, "prefix", _tensor_bytes(keys + values), prefix=(keys, values))

    def _load_own_model(self, key: str, method: str, directory: Path) -> LoadedModule:
        from imprint import registry

        model = registry.method(method)().load(load_base(self.base.name).model, directory)
        return LoadedModule(key, method, _tensor_bytes([*model.parameters(), *model.buffers()]), model=model)

    @contextlib.contextmanager
    def exclusive(self, module: LoadedModule | None):
        """A model that applies `module` (None: none) to every row, for code that runs its own batches
        (`imprint.answer.answer_questions`). Only for the worker thread, between batches."""
        if module is not None and module.model is not None:
            yield module.model
            return
        with contextlib.ExitStack() as stack:
            model = self.shared_model
            if self.peft is not None and (module is None or module.adapter is None):
                stack.enter_context(self.peft.disable_adapter())
            elif self.peft is not None:
                self.peft.set_adapter(module.adapter)
            elif module is not None and module.adapter is not None:
                stack.enter_context(self.bank.route_all(module.adapter))
            if module is not None and module.prefix is not None:
                from imprint.methods.prefix.method import PrefixModel

                model = PrefixModel(model, *module.prefix).eval()
            yield model

    def snapshot(self) -> dict:
        """What is loaded, for /v1/imprint/stats and tests."""
        return {
            "budget_bytes": self.budget,
            "used_bytes": self.used,
            "loaded": [{"module": m.key, "method": m.method, "bytes": m.nbytes} for m in self.loaded.values()],
            "loads": self.loads,
            "evictions": self.evictions,
        }
