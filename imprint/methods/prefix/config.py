"""Prefix (KV-cache cartridge) settings, saved in each module's manifest."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PrefixMethodConfig:
    n_tokens: int = field(default=64, metadata={"help": "length of the trained cache, in token positions"})
    init: str = field(
        default="corpus",
        metadata={
            "help": "'corpus': start from the base model's KV of the corpus's first tokens (Cartridges found "
            "this much better than random); 'random': small Gaussian noise"
        },
    )
    distill: float = field(
        default=0.0,
        metadata={
            "help": "weight of context distillation (0: off, 1: distillation only): at each trained position, "
            "match the base model's top-k next-token distribution when the record's source chunks are in its "
            "context; the rest of the weight stays on next-token loss"
        },
    )
    distill_top_k: int = field(default=32, metadata={"help": "teacher tokens kept per position for distillation"})
    distill_context: int = field(
        default=1024, metadata={"help": "most tokens of source-chunk text put before each record for the teacher"}
    )

    def __post_init__(self):
        if not 1 <= self.n_tokens <= 4096:
            raise ValueError(f"prefix n_tokens must be in [1, 4096], got {self.n_tokens}")
        if self.init not in ("corpus", "random"):
            raise ValueError(f"prefix init must be 'corpus' or 'random', got {self.init!r}")
        if not 0 <= self.distill <= 1:
            raise ValueError(f"prefix distill must be in [0, 1], got {self.distill}")
        if not 1 <= self.distill_top_k <= 1024 or self.distill_context < 1:
            raise ValueError("prefix distill_top_k must be in [1, 1024] and distill_context >= 1")
