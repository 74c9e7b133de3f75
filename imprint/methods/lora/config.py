"""LoRA hyper-parameters, saved in each module's manifest."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoraMethodConfig:
    r: int = field(default=32, metadata={"help": "adapter rank"})
    alpha: int = field(default=64, metadata={"help": "scaling numerator: the update is scaled by alpha / r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})
    target_modules: str = field(
        default="all-linear",
        metadata={"help": "'all-linear' (default: attention-only LoRA learns less) or comma-separated names"},
    )

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA needs r >= 1 and alpha > 0, got r={self.r} alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
