"""Segmented multi-LoRA: many PEFT LoRA adapters on one frozen base, each applied to its own rows of a batch.

The serving engine sorts a batch's rows by adapter, so each adapter's rows are one contiguous slice. Every
targeted linear layer computes the base projection for the whole batch once, then adds each adapter's low-rank
update to its own rows: with one or two adapters in the layer, two small matmuls and an in-place add per adapter
on views; with three or more, the batch's adapters are stacked once per batch composition and applied with two
batched matmuls and one `index_add_` (Punica's segmented/grouped matmul idea, in plain PyTorch).

Why not PEFT's own mixed-adapter batches (`adapter_names=`, still available as `lora_backend=peft`): they
index-copy each adapter's rows in and scatter them back in every layer, about seven small ops per adapter and
layer, and on this 2-core CPU small ops, not FLOPs, set the cost. Measured with 8 adapters in a 16-row decode
step of gemma-3-270m (one thread, machine shared, 2026-11-25): PEFT 650-700 ms, ours 460-510 ms, base alone
350-410 ms. The grouped path halves the adapters' time per layer in isolation (8 adapters: ~250 us against
~450 us), a difference the shared machine's noise hides at the step level. `bench/serve.py` measures whole-server
throughput for both backends.
What remains is mostly memory: 8 rank-32 adapters in fp32 are 240 MB read per step next to the base's 536 MB.
The stacked copy exists only for the adapters of the running batch. Adapters are read from the standard PEFT
files (`adapter_config.json` + `adapter_model.safetensors`) and kept in fp32, as PEFT keeps them next to a bf16
base; the tests check every path against PEFT's forward on the same adapters.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from imprint.errors import ImprintError

PREFIX = "base_model.model."
UNSUPPORTED = ("use_dora", "fan_in_fan_out", "lora_bias", "use_qalora", "layer_replication", "modules_to_save")


@dataclass(frozen=True)
class Update:
    """One adapter's low-rank update of one layer: y += scale * (x @ a) @ b."""

    a: torch.Tensor  # (in_features, r), fp32
    b: torch.Tensor  # (r, out_features), fp32
    scale: float


class MultiLoraLinear(torch.nn.Module):
    """A frozen linear layer plus any number of adapters' updates, each applied to its rows' segment only.

    Few segments: two matmuls per segment on views. Three or more: the batch's adapters are stacked once per
    batch composition (ranks zero-padded, scales folded into B) and applied with two batched matmuls, the rows
    gathered per adapter and added back with one `index_add_`: a handful of ops per layer however many adapters
    share the batch (Punica's grouped matmul, in plain PyTorch).
    """

    def __init__(self, base: torch.nn.Linear, bank: LoraBank):
        super().__init__()
        self.base = base
        self.updates: dict[str, Update] = {}
        self._bank = [bank]  # a list keeps the bank out of the module tree (no recursion in .modules())
        self._stacked: tuple | None = None  # (adapter names, A, B) of the current batch's adapters
        self._rows: tuple | None = None  # (segments, index, keep) of the current batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        segments = [seg for seg in self._bank[0].segments if seg[2] in self.updates]
        if len(segments) >= 3 and x.shape[0] == self._bank[0].rows:
            return self._grouped(x, y, segments)
        for start, end, name in segments:
            update = self.updates[name]
            rows = x[start:end].reshape(-1, x.shape[-1]).to(update.a.dtype)
            y[start:end].view(-1, y.shape[-1]).add_((rows @ update.a) @ update.b, alpha=update.scale)
        return y

    def _grouped(self, x: torch.Tensor, y: torch.Tensor, segments: list) -> torch.Tensor:
        names = tuple(name for _, _, name in segments)
        if self._stacked is None or self._stacked[0] != names:  # new adapters in the batch: stack them once
            self._stacked = (names, *self._stack(names, x.device))
        if self._rows is None or self._rows[0] != segments:  # rows joined or left: re-index (cheap)
            self._rows = (segments, *self._index(segments, x.device))
        _, a, b = self._stacked
        _, index, keep = self._rows
        n, width = a.shape[0], x.shape[-1]
        rows = x.reshape(x.shape[0], -1, width).index_select(0, index)  # (n * m, tokens, in), m rows per adapter
        tokens = rows.shape[1]
        update = torch.bmm(torch.bmm(rows.view(n, -1, width).to(a.dtype), a), b).view(index.shape[0], tokens, -1)
        if keep is not None:  # padding rows (adapters with fewer rows than the largest segment) add nothing
            update = update * keep
        y.view(y.shape[0], tokens, -1).index_add_(0, index, update.to(y.dtype))
        return y

    def _stack(self, names: tuple, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapters' A (n, in, r) and scaled B (n, r, out), ranks zero-padded to the largest."""
        updates = [self.updates[name] for name in names]
        rank = max(u.a.shape[1] for u in updates)
        a = torch.zeros(len(updates), updates[0].a.shape[0], rank, device=device)
        b = torch.zeros(len(updates), rank, updates[0].b.shape[1], device=device)
        for j, update in enumerate(updates):
            a[j, :, : update.a.shape[1]] = update.a
            b[j, : update.b.shape[0]] = update.b * update.scale
        return a, b

    @staticmethod
    def _index(segments: list, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Which batch row fills each of the m slots per adapter (m = the largest segment), and which slots are
        padding."""
        most = max(end - start for start, end, _ in segments)
        index = torch.zeros(len(segments) * most, dtype=torch.long, device=device)
        keep = torch.zeros(len(segments) * most, 1, 1, device=device)
        for j, (start, end, _) in enumerate(segments):
            index[j * most : j * most + end - start] = torch.arange(start, end, device=device)
            keep[j * most : j * most + end - start] = 1
        return index, None if bool(keep.all()) else keep


class LoraBank:
    """The adapters loaded into one base model, and which rows of the current batch use which adapter."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.layers: dict[str, MultiLoraLinear] = {}
        self.segments: list[tuple[int, int, str]] = []
        self.rows = 0  # rows of the batch being routed

    def _layer(self, path: str) -> MultiLoraLinear:
        if path in self.layers:
            return self.layers[path]
        parent_path, _, child = path.rpartition(".")
        try:
            parent = self.model.get_submodule(parent_path) if parent_path else self.model
            linear = getattr(parent, child)
        except AttributeError:
            linear = None
        if not isinstance(linear, torch.nn.Linear):
            raise ImprintError(f"the adapter targets {path}, which is not a linear layer of this base model")
        wrapper = MultiLoraLinear(linear, self)
        setattr(parent, child, wrapper)
        self.layers[path] = wrapper
        return wrapper

    def load(self, name: str, directory: Path) -> int:
        """Load the PEFT adapter in `directory` as `name`; returns the bytes its tensors take."""
        from safetensors.torch import load_file

        config = json.loads((directory / "adapter_config.json").read_text())
        if config.get("peft_type", "LORA") != "LORA":
            raise ImprintError(f"{directory} holds a {config.get('peft_type')} adapter, not LoRA")
        for key in UNSUPPORTED:
            if config.get(key):
                raise ImprintError(f"{directory}: LoRA with {key} is not supported here (serve with lora_backend=peft)")
        r, alpha = config["r"], config["lora_alpha"]
        rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
        tensors = load_file(str(directory / "adapter_model.safetensors"))
        paths = sorted({k[len(PREFIX) :].rsplit(".lora_", 1)[0] for k in tensors if ".lora_A." in k})
        if not paths:
            raise ImprintError(f"{directory}/adapter_model.safetensors holds no LoRA weights")
        device = next(self.model.parameters()).device
        staged: dict[str, Update] = {}
        for path in paths:
            a = tensors[f"{PREFIX}{path}.lora_A.weight"].float().t().contiguous().to(device)
            b = tensors[f"{PREFIX}{path}.lora_B.weight"].float().t().contiguous().to(device)
            rank = next((v for k, v in rank_pattern.items() if path.endswith(k)), r)
            lora_alpha = next((v for k, v in alpha_pattern.items() if path.endswith(k)), alpha)
            if a.shape[1] != rank:
                raise ImprintError(f"{directory}: {path} has rank {a.shape[1]}, its config says {rank}")
            scale = lora_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
            staged[path] = Update(a, b, scale)
        for path, update in staged.items():  # check every layer before changing any
            layer = self._layer(path)
            if (layer.base.in_features, layer.base.out_features) != (update.a.shape[0], update.b.shape[1]):
                raise ImprintError(f"{directory}: {path} does not match this base model's layer shape")
        for path, update in staged.items():
            self.layers[path].updates[name] = update
        return sum(u.a.numel() * 4 + u.b.numel() * 4 for u in staged.values())

    def unload(self, name: str) -> None:
        for layer in self.layers.values():
            layer.updates.pop(name, None)
            layer._stacked = None

    @contextlib.contextmanager
    def route(self, adapters: list[str]):
        """Run the forward passes inside with row i on `adapters[i]` (`__base__`: none); rows of one adapter
        must be contiguous."""
        segments, start = [], 0
        for i in range(1, len(adapters) + 1):
            if i == len(adapters) or adapters[i] != adapters[start]:
                if adapters[start] != "__base__":
                    segments.append((start, i, adapters[start]))
                start = i
        if len({name for _, _, name in segments}) != len(segments):
            raise ValueError("rows of one adapter must be contiguous: sort the batch by adapter")
        self.segments, self.rows = segments, len(adapters)
        try:
            yield {}
        finally:
            self.segments, self.rows = [], 0
