"""A product-key memory (Lample et al. 2019; Berges et al. 2024, "Memory Layers at Scale") added beside an MLP.

Each token's MLP input is projected to `heads` queries; each query is split in two halves, each half scored
against its own `n_keys` half-keys, and the `knn` best of the knn x knn sums (the product keys) pick slots of one
table of `n_keys ** 2` value rows. The token's memory output is the softmax-weighted sum of those rows over all
heads, added to the MLP's contribution to the residual stream (after Gemma's post-feedforward norm), scaled by
that contribution's measured size so that a value row of order 1 matters as much as the MLP does.

Only the value table trains. The query projection and keys stay at their seeded random values: the lookup is a
fixed hash of the hidden state, so a slot's general-text use (the TF-IDF background) stays what it was measured
to be, and a slot nobody updates keeps meaning nothing. The values start at zero, so before training the model
computes exactly what the base does (x + 0 == x).

The memory attaches by forward hooks (on the MLP, and on the norm after it): the HF model class and its parameter
names stay as they are; the memories live under `model.imprint_memory`, so they are the model's parameters
(optimizer, checkpoint).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ATTRIBUTE = "imprint_memory"  # the ModuleDict of memories on the model, keyed by decoder layer index


class ProductKeyMemory(torch.nn.Module):
    def __init__(self, dim: int, n_keys: int, heads: int, knn: int, key_dim: int, generator: torch.Generator):
        super().__init__()
        self.n_keys, self.heads, self.knn, self.half = n_keys, heads, knn, key_dim // 2
        query = torch.randn(heads * key_dim, dim, generator=generator) / math.sqrt(dim)
        keys = F.normalize(torch.randn(heads, 2, n_keys, self.half, generator=generator), dim=-1)
        self.query = torch.nn.Parameter(query, requires_grad=False)
        self.keys = torch.nn.Parameter(keys, requires_grad=False)
        self.values = torch.nn.Parameter(torch.zeros(n_keys * n_keys, dim), requires_grad=False)  # trains: method.py
        self.register_buffer("scale", torch.ones(()))  # the MLP contribution's RMS on general text (at attach)
        self.register_buffer("background_df", torch.zeros(n_keys * n_keys))  # general texts reading each slot
        self.register_buffer("background_n", torch.zeros(()))  # how many general texts that was
        self.counts = torch.zeros(n_keys * n_keys)  # slot reads since the last optimizer step (not saved)
        self.observing = False  # count reads outside training too (measuring the background)

    @property
    def n_slots(self) -> int:
        return self.n_keys * self.n_keys

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots, weights) of shape (tokens, heads, knn) for hidden states x of shape (..., dim)."""
        flat = x.reshape(-1, x.shape[-1]).to(self.query.dtype)
        q = F.normalize((flat @ self.query.T).view(-1, self.heads, 2, self.half), dim=-1)
        scores = torch.einsum("thsd,hskd->thsk", q, self.keys) * math.sqrt(self.half)
        best, index = scores.topk(self.knn, dim=-1)  # (tokens, heads, 2, knn) per half
        pairs = (best[:, :, 0, :, None] + best[:, :, 1, None, :]).flatten(-2)  # knn x knn product scores
        top, flat_pair = pairs.topk(self.knn, dim=-1)
        first = index[:, :, 0].gather(-1, flat_pair // self.knn)
        second = index[:, :, 1].gather(-1, flat_pair % self.knn)
        return first * self.n_keys + second, torch.softmax(top, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slots, weights = self.lookup(x)
        if self.observing or (self.training and torch.is_grad_enabled()):
            self.counts += torch.bincount(slots.flatten(), minlength=self.n_slots).to(self.counts.dtype)
        rows = slots.view(-1, self.knn)
        out = F.embedding_bag(
            rows, self.values, per_sample_weights=weights.reshape(-1, self.knn).to(self.values.dtype), mode="sum"
        )
        out = out.view(*x.shape[:-1], self.heads, -1).sum(-2) * self.scale
        return out.to(x.dtype)


def output_module(layer: torch.nn.Module) -> torch.nn.Module:
    """Where a layer's memory output joins: after Gemma's post-feedforward norm (the MLP's contribution to the
    residual stream, so the memory is not normalised away with it), else the MLP's own output."""
    return getattr(layer, "post_feedforward_layernorm", None) or layer.mlp


def _hooks(layer: torch.nn.Module, memory: ProductKeyMemory) -> None:
    """The memory reads the MLP's input and adds to `output_module`'s output: two hooks when those differ."""
    joins = output_module(layer)
    if joins is layer.mlp:
        layer.mlp.register_forward_hook(lambda module, args, output: output + memory(args[0]))
        return
    pending = {}  # the memory's output, from the MLP's hook to the norm's

    def read(module, args, output):
        pending["out"] = memory(args[0])

    def add(module, args, output):
        return output + pending.pop("out")

    layer.mlp.register_forward_hook(read)
    joins.register_forward_hook(add)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(model.get_decoder().layers)


def attach_memories(model: torch.nn.Module, memories: dict[int, ProductKeyMemory]) -> None:
    """Put `memories` (decoder layer index -> memory) beside those layers' MLPs, by forward hooks."""
    if hasattr(model, ATTRIBUTE):
        raise ValueError("this model already carries memory layers: load a fresh base model")
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    table = torch.nn.ModuleDict({str(i): m for i, m in sorted(memories.items())}).to(device)
    model.add_module(ATTRIBUTE, table)
    for index, memory in memories.items():
        memory.counts = memory.counts.to(device)
        _hooks(layers[index], memory)


def memories_of(model: torch.nn.Module) -> dict[int, ProductKeyMemory]:
    table = getattr(model, ATTRIBUTE, None)
    return {int(k): m for k, m in table.items()} if table is not None else {}


def resolve_layers(spec: str, n_layers: int) -> list[int]:
    """Decoder layer indices from the `layers` setting, checked against the model."""
    if spec == "middle":
        return [n_layers // 2]
    picked = sorted({int(p) for p in spec.split(",")})
    if picked[-1] >= n_layers:
        raise ValueError(f"memory layer {picked[-1]} does not exist: this model has layers 0..{n_layers - 1}")
    return picked
