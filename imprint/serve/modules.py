"""Modules joined on first use and kept in an LRU cache under a memory budget, all sharing one base model.

Each module joins the shared base by its method's own `join` (`imprint.methods.loading.join`): LoRA as
one more adapter in the shared model (bytes: its tensors), prefix as per-layer keys and values handed to the
engine per row (bytes: those tensors), full as a separate copy of the whole model counted at its full size.
The budget counts modules only (the base model is always resident). Modules a running batch uses are pinned and
never evicted under it. Everything here runs on the scheduler's single worker thread.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from imprint.errors import ImprintError
from imprint.inference.modules import Joined, ModuleHost
from imprint.methods import loading
from imprint.models import BaseModel


class ModuleTooLarge(ImprintError):
    """A module cannot fit the memory budget: never (`fits_alone` False), or not next to the pinned ones."""

    def __init__(self, message: str, fits_alone: bool):
        super().__init__(message)
        self.fits_alone = fits_alone


class ModuleCache(ModuleHost):
    def __init__(self, base: BaseModel, budget_bytes: int, lora_backend: str = "segmented"):
        super().__init__(base, lora_backend)
        self.budget = int(budget_bytes)
        self.loaded: OrderedDict[str, Joined] = OrderedDict()  # least recently used first
        self.loads = 0
        self.evictions = 0

    @property
    def used(self) -> int:
        return sum(m.nbytes for m in self.loaded.values())

    def get(self, key: str, method: str, directory: Path, pinned: set[str] = frozenset()) -> Joined:
        """The joined module `key`, joining it (and evicting least recently used unpinned ones) if needed."""
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        need = loading.serving_bytes(self, method, directory)
        self._make_room(need, pinned, key)
        module = loading.join(self, key, method, directory)
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
        self.leave(self.loaded.pop(key))
        self.evictions += 1

    def snapshot(self) -> dict:
        """What is loaded, for /v1/imprint/stats and tests."""
        return {
            "budget_bytes": self.budget,
            "used_bytes": self.used,
            "loaded": [{"module": m.key, "method": m.method, "bytes": m.nbytes} for m in self.loaded.values()],
            "loads": self.loads,
            "evictions": self.evictions,
        }
