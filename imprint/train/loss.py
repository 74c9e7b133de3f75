"""Next-token (and distillation) loss without materialising the full logits tensor.

Gemma-3's 262k-token vocabulary makes `hidden @ embedding.T` the largest matmul of a training step, and its
logits the largest tensor: 1 MB of fp32 per position. A plain `cross_entropy(logits.float())` writes and
re-reads that tensor several times (cast, log-softmax, its backward), which on a 2-core CPU costs more than the
matmul itself. Here a custom autograd function projects only the positions that carry a target (for question-
answer records, the answer alone), in row blocks, and since the loss is the end of the graph it computes the
gradients in the same pass (as Liger's fused linear cross-entropy does): per block, the logits, their
log-sum-exp and `softmax - target` in one fused kernel, then `grad @ W` at once. Backward only scales the
stored gradients, so the logits are projected once instead of twice and peak memory is one block.

Targets are soft: each position has k target ids with weights (k = 1, weight 1 for plain next-token loss; the
teacher's top-k probabilities for context distillation), and the loss of a row is sum_k w_k (lse - x_k).
For large vocabularies the element-wise part is compiled with `torch.compile` into one pass over the bf16
logits (on this 2-core AMX CPU, for a 256 x 262k block, 0.04 s instead of 0.16 s for the statistics and
0.07 s instead of 0.44 s for the gradient, measured 2026-11-23; whole-loop numbers: bench/RESULTS.md).

When the projection matrix is frozen (LoRA, prefix, full fine-tuning with frozen embeddings) and there is no
logit soft-cap, the gradient a position needs is only `sum(w) * E_softmax[W] - sum_k w_k W[y_k]`: the
softmax-weighted mean of the embedding rows, i.e. attention with the hidden state as query and the embedding
matrix as both keys and values. That is computed like flash attention, one vocabulary tile at a time with an
online softmax (running max, sum and rescaled accumulator), so the logits never leave the cache and each is
exponentiated once; the tile's exponentials go straight into `e @ W_tile`. On a 2-core AVX512 CPU without
AMX, whose memory bandwidth is a few GB/s, this takes the vocabulary part of a step from 2.66 to 2.16 ms per
labelled position (1,175 positions, gemma-3's 262k x 640 embedding, 2026-11-25).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

IGNORE = -100
COMPILE_MIN_VOCAB = 65536  # below this the eager kernels are fast enough and compiling costs more than it saves


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _capped(logits: torch.Tensor, softcap: float) -> torch.Tensor:
    x = _upcast(logits)
    return torch.tanh(x / softcap) * softcap if softcap else x


def _loss_rows(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, softcap: float) -> torch.Tensor:
    """Per-row sum_k w_k (lse - x_k), in fp32 (fp64 stays fp64 for gradcheck)."""
    x = _capped(logits, softcap)
    lse = torch.logsumexp(x, dim=-1)
    return weights.sum(1) * lse - (weights * x.gather(1, ids)).sum(1)


def _loss_and_grad(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, softcap: float):
    """The rows' losses and d(sum of them)/d(logits) = sum(w) softmax - scatter(w), through the soft cap."""
    raw = _upcast(logits)
    x = torch.tanh(raw / softcap) * softcap if softcap else raw
    lse = torch.logsumexp(x, dim=-1)
    wsum = weights.sum(1)
    loss = wsum * lse - (weights * x.gather(1, ids)).sum(1)
    grad = wsum[:, None] * torch.exp(x - lse[:, None]) - torch.zeros_like(x).scatter_add_(1, ids, weights)
    if softcap:
        grad = grad * (1 - torch.tanh(raw / softcap) ** 2)
    return loss, grad.to(logits.dtype)


def _online_tile(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor, dtype: torch.dtype):
    """One vocabulary tile of an online softmax: the tile's exp(x - new max) in `dtype`, the new running max and
    sum, and the factor by which earlier partial sums shrink."""
    x = _upcast(x)
    m_new = torch.maximum(m, x.amax(1))
    scale = torch.exp(m - m_new)
    e = torch.exp(x - m_new[:, None])
    return e.to(dtype), m_new, s * scale + e.sum(1), scale


EAGER_KERNELS = (_loss_rows, _loss_and_grad, _online_tile)
_KERNELS: dict[str, tuple] = {}  # compiled kernels by torch.compile backend
VOCAB_TILE = 4096  # columns of the online softmax: a 256 x 4096 fp32 tile and a 4096 x d bf16 slice stay cached


def _kernels(backend: str | None):
    """The element-wise kernels: eager (`backend` None) or compiled with that torch.compile backend."""
    if backend is None:
        return EAGER_KERNELS
    if backend not in _KERNELS:
        _KERNELS[backend] = tuple(torch.compile(fn, backend=backend) for fn in EAGER_KERNELS)
    return _KERNELS[backend]


def _online_softmax(hidden, weight, block: int, tile_fn, expectation: bool):
    """Per row of `hidden`: logsumexp_v(h . W_v) and (if `expectation`) sum_v softmax_v W_v, vocabulary tile by
    tile (outer loop, so each slice of W is read from memory once) and `block` rows at a time."""
    n, acc_dtype = hidden.shape[0], _upcast(hidden[:1]).dtype
    m = torch.full((n,), float("-inf"), dtype=acc_dtype, device=hidden.device)
    s = torch.zeros(n, dtype=acc_dtype, device=hidden.device)
    acc = torch.zeros(n, weight.shape[1], dtype=acc_dtype, device=hidden.device) if expectation else None
    for v0 in range(0, weight.shape[0], VOCAB_TILE):
        w = weight[v0 : v0 + VOCAB_TILE]
        for start in range(0, n, block):
            rows = slice(start, start + block)
            e, m[rows], s[rows], scale = tile_fn(F.linear(hidden[rows], w), m[rows], s[rows], weight.dtype)
            if expectation:
                acc[rows].mul_(scale[:, None]).add_(e @ w)
    lse = m + s.log()
    return lse, (acc / s[:, None] if expectation else None)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_i sum_k w_ik CE(h_i @ W.T, y_ik), `block` rows at a time; gradients computed in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, ids, weights, block: int, softcap: float | None, backend: str | None, grads: bool):
        loss_rows, loss_and_grad, online_tile = _kernels(backend)
        weights = weights.to(_upcast(hidden[:1]).dtype)
        need_h, need_w = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
        if not (need_w or softcap):  # frozen projection: the flash-attention-like online softmax
            lse, expected = _online_softmax(hidden, weight, block, online_tile, need_h)
            targets = _upcast(weight[ids])  # (n, k, d)
            # the target logits rounded as the tiles' were (bf16 matmul output), so lse - x_y >= 0 stays true
            x = _upcast((targets @ _upcast(hidden)[:, :, None])[..., 0].to(hidden.dtype))
            wsum = weights.sum(1)
            total = (wsum * lse - (weights * x).sum(1)).sum()
            if need_h:
                grad_hidden = (wsum[:, None] * expected - (weights[..., None] * targets).sum(1)).to(hidden.dtype)
                ctx.save_for_backward(grad_hidden)
            ctx.has = (need_h, False)
            return total
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros_like(_upcast(weight)) if need_w else None
        total = torch.zeros((), dtype=weights.dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], block):
            rows = slice(start, start + block)
            h, logits = hidden[rows], F.linear(hidden[rows], weight)
            if not (need_h or need_w):
                total += loss_rows(logits, ids[rows], weights[rows], softcap or 0.0).sum()
                continue
            loss, grad = loss_and_grad(logits, ids[rows], weights[rows], softcap or 0.0)
            total += loss.sum()
            if need_h:
                grad_hidden[rows] = grad @ weight
            if need_w:
                grad_weight.addmm_(_upcast(grad).t(), _upcast(h))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight) if g is not None))
        ctx.has = (need_h, need_w)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grad_hidden = saved.pop(0) * grad_out if ctx.has[0] else None
        grad_weight = saved.pop(0) * grad_out if ctx.has[1] else None
        return grad_hidden, grad_weight, None, None, None, None, None, None


def compiles_loss(vocab_size: int, compile: bool | None) -> bool:
    """Whether the loss kernels compile: `compile=None` means only for large vocabularies."""
    return vocab_size >= COMPILE_MIN_VOCAB if compile is None else compile


def fused_cross_entropy(
    hidden,
    weight,
    ids,
    weights=None,
    block: int = 256,
    softcap: float | None = None,
    compile: bool | None = None,
    backend: str = "inductor",
) -> torch.Tensor:
    """Summed (soft-target) cross-entropy of `hidden @ weight.T`: `ids` (n,) or (n, k), `weights` like it.

    `compile=None` compiles the element-wise kernels (with torch.compile `backend`) only for large vocabularies.
    Whether compiled kernels compute what eager ones do on this machine is checked by the training loop
    (imprint.train.compute.MicroStep), not here."""
    if ids.dim() == 1:
        ids = ids[:, None]
    if weights is None:
        weights = torch.ones(ids.shape, dtype=_upcast(hidden[:1]).dtype, device=hidden.device)
    grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    args = (hidden, weight, ids, weights, block, softcap)
    if compile:  # asked for explicitly (the training loop): a failure is the caller's to handle and report
        return FusedLinearCrossEntropy.apply(*args, backend, grads)
    if compiles_loss(weight.shape[0], compile):
        try:
            return FusedLinearCrossEntropy.apply(*args, backend, grads)
        except Exception as exc:  # no C++ compiler, unsupported platform: correct but slower eager kernels
            warnings.warn(
                f"torch.compile of the loss failed ({str(exc).splitlines()[0]}); using eager kernels", stacklevel=2
            )
            _KERNELS[backend] = EAGER_KERNELS
    return FusedLinearCrossEntropy.apply(*args, None, grads)


def blockwise_cross_entropy(hidden, weight, targets, block: int = 256, softcap=None, compile=None) -> torch.Tensor:
    """Summed hard-label cross-entropy of `hidden @ weight.T` against `targets` (n,)."""
    return fused_cross_entropy(hidden, weight, targets, None, block, softcap, compile)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_hidden(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Last hidden states of a padded batch (`attention_mask`) or a packed one (`position_ids` restarting at each
    example, no mask: transformers then masks attention block-diagonally, per example)."""
    mask, positions = batch.get("attention_mask"), batch.get("position_ids")
    if hasattr(model, "decoder_hidden"):  # methods that change the inputs (a trained KV prefix) say how
        return model.decoder_hidden(batch["input_ids"], mask, positions)
    decoder = _unwrap(model).get_decoder()
    return decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=False)[0]


def causal_lm_loss(
    model: torch.nn.Module,
    batch: dict,
    chunk: int = 256,
    compile: bool | None = None,
    distill: float = 0.0,
    backend: str = "inductor",
):
    """Mean loss over labelled positions, and how many positions that was.

    Next-token cross-entropy; with `distill` > 0 and teacher targets in the batch (`teacher_ids`,
    `teacher_probs`: the top-k of a teacher at each labelled position), each such position's target is
    `(1 - distill) * onehot(label) + distill * teacher`, i.e. the loss mixes next-token and distillation
    cross-entropy in one pass over the vocabulary.
    """
    base = _unwrap(model)
    hidden = decoder_hidden(model, batch)
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    n = int(keep.sum())
    if n == 0:
        return hidden.sum() * 0.0, 0
    ids, weights = labels[keep][:, None], None
    if distill > 0 and batch.get("teacher_ids") is not None:
        teacher = batch["teacher_probs"][:, 1:][keep].float()
        label_weight = torch.where(teacher.sum(1, keepdim=True) > 0, 1.0 - distill, 1.0)
        ids = torch.cat([ids, batch["teacher_ids"][:, 1:][keep].long()], 1)
        weights = torch.cat([label_weight, distill * teacher], 1)
    weight = base.get_output_embeddings().weight.to(hidden.dtype)  # fp32 master weights under bf16 autocast
    softcap = getattr(base.config, "final_logit_softcapping", None)
    total = fused_cross_entropy(hidden[:, :-1][keep], weight, ids, weights, chunk, softcap, compile, backend)
    return total / n, n
