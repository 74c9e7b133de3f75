"""Memory-layer settings, saved in each module's manifest."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MemoryMethodConfig:
    layers: str = field(
        default="middle",
        metadata={
            "help": "decoder layers that get a memory beside their MLP: 'middle' (one, at num_layers // 2) or "
            "comma-separated indices, e.g. '6,12'"
        },
    )
    n_keys: int = field(
        default=128,
        metadata={"help": "half-keys per product-key half: the table has n_keys ** 2 slots (128 -> 16,384)"},
    )
    heads: int = field(default=4, metadata={"help": "queries per token, each reading `knn` slots of the one table"})
    knn: int = field(default=32, metadata={"help": "slots each query reads (top-k of the n_keys ** 2 products)"})
    key_dim: int = field(default=128, metadata={"help": "query/key width per head (split into two halves)"})
    update: str = field(
        default="sparse",
        metadata={
            "help": "'sparse': each step updates only the top_t slots the batch reads much more than general text "
            "does (TF-IDF; Lin et al. 2025); 'dense': every slot the optimizer has seen moves, as plain AdamW"
        },
    )
    top_t: int = field(
        default=2000,
        metadata={
            "help": "sparse: slots updated per step and layer; the rest stay untouched. 2000 of 16,384 measured "
            "(bench/RESULTS.md, memory_forgetting on squad_dev): 500 (Lin et al.: 500 of 1M) kept nearly all of the "
            "base but learned too little to pass the held-in check on 3 passages; 4000 recalled more of its training "
            "questions and forgot 2.5-4x more"
        },
    )
    background: str = field(
        default="self",
        metadata={
            "help": "general text whose slot use is the TF-IDF background: 'self' (the base model's own samples on "
            "varied prompts, as self-replay, cached) or a file or folder of text"
        },
    )
    background_texts: int = field(default=64, metadata={"help": "'self': how many samples make the background"})
    seed: int = field(default=0, metadata={"help": "seed of the fixed random keys and query projection"})

    def __post_init__(self):
        ascii_digits = (p.strip() for p in self.layers.split(","))  # int('١') is 1: ASCII only
        if self.layers != "middle" and not all(p.isascii() and p.isdigit() for p in ascii_digits):
            raise ValueError(f"memory layers must be 'middle' or comma-separated indices, got {self.layers!r}")
        if self.n_keys < 2 or self.heads < 1 or self.key_dim < 2 or self.key_dim % 2:
            raise ValueError("memory needs n_keys >= 2, heads >= 1 and an even key_dim >= 2")
        if not 1 <= self.knn <= self.n_keys:
            raise ValueError(f"memory knn must be in [1, n_keys={self.n_keys}], got {self.knn}")
        if self.update not in ("sparse", "dense"):
            raise ValueError(f"memory update must be 'sparse' or 'dense', got {self.update!r}")
        if self.top_t < 1 or self.background_texts < 1:
            raise ValueError("memory top_t and background_texts must be >= 1")
