"""Next-token loss without materialising the full logits tensor.

Gemma-3's 262k-token vocabulary makes `hidden @ embedding.T` the largest matmul of a training step and its
fp32 logits the largest tensor (262k x 4 bytes per position). We only project the positions that carry a
label (for question-answer records that is the answer alone), and do it in chunks whose logits are recomputed
in the backward pass instead of stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float | None):
    logits = F.linear(hidden, weight).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


def causal_lm_loss(model: torch.nn.Module, batch: dict, chunk: int = 1024) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions, and how many positions that was."""
    base = _unwrap(model)
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    selected, targets = hidden[:, :-1][keep], labels[keep]
    weight = base.get_output_embeddings().weight
    softcap = getattr(base.config, "final_logit_softcapping", None)
    n = int(targets.numel())
    if n == 0:
        return hidden.sum() * 0.0, 0
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        h, y = selected[start : start + chunk], targets[start : start + chunk]
        if n > chunk and torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, h, weight, y, softcap, use_reentrant=False)
        else:
            total = total + _chunk_loss(h, weight, y, softcap)
    return total / n, n
