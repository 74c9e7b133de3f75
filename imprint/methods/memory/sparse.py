"""Sparse memory fine-tuning (Lin et al. 2025, arXiv 2510.15103): each step updates only the memory slots the batch
reads far more than general text does, and an optimizer that leaves every other slot exactly as it was.

Ranking: a slot's term frequency is its share of the step's reads; its inverse document frequency is
log((N + 1) / (df + 1)) over N general texts, df of which read it. The `top_t` slots by TF x IDF are updated.

Why not plain AdamW over a masked gradient (what the published code does): AdamW would still move unselected rows
through their momentum from earlier steps and shrink them by weight decay, so "untouched" would be false. Here
AdamW runs row by row: only the selected rows' moments, step counts (bias correction per row, as lazy Adam does)
and weights change. With every row selected it is exactly `torch.optim.AdamW`, which is the dense variant.
"""

from __future__ import annotations

import torch

from imprint.methods.memory.layer import ProductKeyMemory


def tfidf_scores(counts: torch.Tensor, background_df: torch.Tensor, background_n: float) -> torch.Tensor:
    """TF-IDF of each slot for one step's read counts against the general texts' document frequencies."""
    tf = counts / counts.sum().clamp_min(1)
    idf = torch.log((background_n + 1) / (background_df + 1))
    return tf * idf


def select_slots(memory: ProductKeyMemory, top_t: int) -> torch.Tensor:
    """The slots to update this step: the `top_t` read slots with the highest TF-IDF (all read ones if fewer)."""
    read = memory.counts > 0
    k = min(top_t, int(read.sum()))
    scores = tfidf_scores(memory.counts, memory.background_df, float(memory.background_n))
    scores = scores.masked_fill(~read, float("-inf"))
    return scores.topk(k).indices.sort().values


class RowAdamW(torch.optim.Optimizer):
    """AdamW over the rows of each memory's value table that its `select(memory)` returns (None: every row).

    `zero_grad` also clears the memories' read counts: the loop calls it after every step, applied or skipped
    (a non-finite step leaves weights, moments and counts of the next step clean)."""

    def __init__(self, memories: list[ProductKeyMemory], select, lr: float, weight_decay: float = 0.0):
        super().__init__([m.values for m in memories], dict(lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999)))
        self.memories, self.select = memories, select
        self.eps = 1e-8

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for memory in self.memories:
            memory.counts.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        lr, decay, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
        for memory in self.memories:
            p = memory.values
            if p.grad is None:
                continue
            rows = self.select(memory)
            rows = torch.arange(p.shape[0], device=p.device) if rows is None else rows.to(p.device)
            state = self.state[p]
            if not state:
                state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["row_steps"] = torch.zeros(p.shape[0], device=p.device)
            grad = p.grad[rows]
            steps = state["row_steps"][rows] + 1
            exp_avg = state["exp_avg"][rows].mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            state["row_steps"][rows], state["exp_avg"][rows], state["exp_avg_sq"][rows] = steps, exp_avg, exp_avg_sq
            denom = (exp_avg_sq / (1 - beta2**steps)[:, None]).sqrt_().add_(self.eps)
            p[rows] = p[rows] * (1 - lr * decay) - lr * (exp_avg / (1 - beta1**steps)[:, None]) / denom
        return None
