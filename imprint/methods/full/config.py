"""Full fine-tuning settings, saved in each module's manifest."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FullMethodConfig:
    freeze_embeddings: bool = field(
        default=True,
        metadata={
            "help": "keep the token embeddings (tied to the output layer in Gemma) frozen: 168M of 268M "
            "parameters in gemma-3-270m, and the part whose drift costs most general knowledge"
        },
    )
