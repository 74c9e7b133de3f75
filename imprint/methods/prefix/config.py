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

    def __post_init__(self):
        if not 1 <= self.n_tokens <= 4096:
            raise ValueError(f"prefix n_tokens must be in [1, 4096], got {self.n_tokens}")
        if self.init not in ("corpus", "random"):
            raise ValueError(f"prefix init must be 'corpus' or 'random', got {self.init!r}")
