"""The inference engine: every token imprint generates (answers, eval samples, replay, the local synth generator and
the server) comes from `generate` or a `Batch`, with continuous batching: base rows, LoRA rows and prefix rows
share every forward pass.

Why a loop of our own rather than `model.generate`: each row has its own module, sampling settings, stop strings,
token budget and streaming consumer, and rows that finish leave the batch at once (`generate` runs every row to
the longest one and streams only batch size 1). What makes one forward pass serve different modules:

- LoRA rows: a router (`LoraBank`, or PEFT's mixed batches) applies each row's `adapter` to its rows only
  (`"__base__"` for rows without one).
- Prefix rows (KV-cache cartridges): the batch's cache starts with a prefix area as long as the longest prefix
  in the batch. A row's prefix fills the right end of that area and the attention mask hides the rest, so rows
  with a shorter prefix, or none (base and LoRA rows), attend to exactly what they would alone. Position ids
  come from the mask, so a prompt after an n-token prefix starts at position n, as in training.
- Context rows (`icl`: the whole corpus in context): a prefilled cache of the context, copied for the row, which
  decodes in a batch of its own (the cache may hold sliding-window layers already past their window).
- Prompts are left-padded here and nowhere else; rows that finish are dropped from the cache
  (`batch_select_indices`) so the rest decode at the smaller batch size.

Full fine-tunes are whole models: their rows run as a batch of their own on their own copy. A model that carries a
KV prefix of its own (`PrefixModel`) runs as its base with the prefix on every row.
"""

from __future__ import annotations

import contextlib
import copy
from collections import deque

import torch
from transformers import DynamicCache

from imprint.inference.rows import Context, Row
from imprint.inference.sampling import sample_next_token
from imprint.models import cache_keyword, output_cache, wants_autocast


def _prefix_cache(model: torch.nn.Module, rows: list[Row], dtype: torch.dtype, device) -> tuple[DynamicCache, int]:
    """The batch's prefix area: each row's KV prefix right-aligned in slots as long as the longest one (a context
    row decodes alone: its own cache, copied)."""
    if rows[0].context is not None:
        if len(rows) != 1:
            raise ValueError("a row with a context cache decodes alone")
        return copy.deepcopy(rows[0].context.cache), rows[0].context.length
    cache = DynamicCache(config=model.config)
    width = max(r.prefix_len for r in rows)
    if width == 0:
        return cache, 0
    sample = next(r.prefix for r in rows if r.prefix is not None)
    for layer in range(len(sample[0])):
        kv_heads, head_dim = sample[0][layer].shape[1], sample[0][layer].shape[3]
        keys = torch.zeros(len(rows), kv_heads, width, head_dim, dtype=dtype, device=device)
        values = torch.zeros_like(keys)
        for i, row in enumerate(rows):
            if row.prefix is not None:
                n = row.prefix_len
                keys[i, :, width - n :] = row.prefix[0][layer][0].to(dtype)
                values[i, :, width - n :] = row.prefix[1][layer][0].to(dtype)
        cache.update(keys, values, layer)
    return cache, width


class Batch:
    """Rows decoding together on one model with continuous batching: rows join between steps (after a prefill
    of their own, their cache left-padded to the batch's length and concatenated) and leave as they finish.

    Invariants between calls: rows are sorted by adapter; `tokens` holds each row's next input token, `mask` is
    the attention mask including that token's slot, `positions` its position. Joining needs both caches shorter
    than the sliding window (no layer has dropped old positions yet); `fits` says when it is not the case.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, router=None):
        self.model, self.tokenizer, self.router = model, tokenizer, router
        self.device = next(model.parameters()).device
        self.dtype = model.get_input_embeddings().weight.dtype
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.window = getattr(config, "sliding_window", None)
        self.autocast = wants_autocast(model)
        self.cache_keyword = cache_keyword(model)
        self.rows: list[Row] = []
        self.cache = self.mask = self.positions = self.tokens = None

    def __len__(self) -> int:
        return len(self.rows)

    def fits(self, rows: list[Row]) -> bool:
        """Whether `rows` can join now (always true for an empty batch; never for a context row beside others)."""
        if not self.rows:
            return all(r.context is None for r in rows) or len(rows) == 1
        if any(r.context is not None for r in [*self.rows, *rows]):
            return False
        if not self.window:
            return True
        width = max(r.prefix_len for r in rows) + max(len(r.prompt_ids) for r in rows)
        return max(self.mask.shape[1], width) < self.window - 1

    @torch.inference_mode()
    def admit(self, rows: list[Row]) -> None:
        """Prefill `rows` and add the unfinished ones to the batch (their first token is already generated)."""
        rows = sorted(rows, key=lambda r: r.adapter)
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long, device=self.device)
        prompt_mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, device=self.device)
            prompt_mask[i, width - len(row.prompt_ids) :] = 1
        cache, prefix_width = _prefix_cache(self.model, rows, self.dtype, self.device)
        prefix_mask = torch.zeros((len(rows), prefix_width), dtype=torch.long, device=self.device)
        for i, row in enumerate(rows):
            prefix_mask[i, prefix_width - row.prefix_len :] = 1
        mask = torch.cat([prefix_mask, prompt_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_width:]
        state = self._forward(rows, input_ids, mask, positions, cache)
        if state[0]:
            self._merge(*state)

    @torch.inference_mode()
    def step(self) -> None:
        """One decode step for every row in the batch."""
        state = self._forward(self.rows, self.tokens, self.mask, self.positions, self.cache)
        self.rows, self.cache, self.mask, self.positions, self.tokens = state

    def _forward(self, rows, input_ids, mask, positions, cache):
        """Run the model, sample one token per row, drop finished rows: the new (rows, cache, mask, positions,
        tokens)."""
        routing = self.router.route([r.adapter for r in rows]) if self.router else contextlib.nullcontext({})
        with routing as extra, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1, **{self.cache_keyword: cache}, **extra)  # fmt: skip
        cache = output_cache(out)
        tokens, logprobs = sample_next_token(out.logits[:, -1, :], rows)
        for row, token, logprob in zip(rows, tokens, logprobs, strict=True):
            if row.cancelled():
                row.finish_reason = "cancelled"
            else:
                row.push(token, logprob, self.tokenizer)
        keep = [i for i, r in enumerate(rows) if r.finish_reason is None]
        if len(keep) < len(rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            cache.batch_select_indices(index)
            mask, positions, rows = mask[index], positions[index], [rows[i] for i in keep]
        tokens = torch.tensor([[r.ids[-1]] for r in rows], dtype=torch.long, device=self.device).view(len(rows), 1)
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        return rows, cache, mask, positions[:, -1:] + 1, tokens

    def _merge(self, rows, cache, mask, positions, tokens) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask, self.positions, self.tokens = rows, cache, mask, positions, tokens
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width - 1, -2), _left_pad(theirs.keys, width - 1, -2)])
            mine.values = torch.cat([_left_pad(mine.values, width - 1, -2), _left_pad(theirs.values, width - 1, -2)])
            if hasattr(mine, "cumulative_length"):  # sliding-window layers count what they have seen
                mine.cumulative_length = width - 1
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        self.positions = torch.cat([self.positions, positions])
        self.tokens = torch.cat([self.tokens, tokens])
        self.rows = self.rows + rows
        order = sorted(range(len(self.rows)), key=lambda i: self.rows[i].adapter)  # contiguous adapters again
        if order != list(range(len(self.rows))):
            index = torch.tensor(order, dtype=torch.long, device=self.device)
            self.cache.batch_select_indices(index)
            self.mask, self.positions, self.tokens = self.mask[index], self.positions[index], self.tokens[index]
            self.rows = [self.rows[i] for i in order]


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zeros on the left of `dim` up to `width` (masked positions: attention never reads them)."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


@torch.inference_mode()
def prefill(model: torch.nn.Module, ids: list[int]) -> Context:
    """The KV cache of `ids` (e.g. the corpus for `icl`), computed once for rows to continue from."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model)):
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1)
    return Context(output_cache(out), len(ids))


def generate(model: torch.nn.Module, tokenizer, rows: list[Row], router=None, max_batch: int = 16, progress=None):
    """Decode every row to its end on `model`, at most `max_batch` at once (a finished row's place is taken by the
    next waiting row); results land in the rows. `progress(done, total)` is called as rows finish.

    `router` (a `LoraBank`, or `PeftRouter` for PEFT's mixed batches) applies each row's LoRA `adapter`
    (`__base__`: none) inside its `route(adapters)` context, which yields extra forward arguments. A model with a
    KV prefix of its own (`PrefixModel`: `kv_prefix()`) runs as its base with that prefix on every row.
    """
    if hasattr(model, "kv_prefix"):
        model, prefix = model.kv_prefix()
        for row in rows:
            row.prefix = prefix
    waiting, total, done = deque(rows), len(rows), 0
    batch = Batch(model, tokenizer, router)
    while waiting or batch:
        joining: list[Row] = []
        while waiting and len(batch) + len(joining) < max_batch and batch.fits([*joining, waiting[0]]):
            joining.append(waiting.popleft())
            if joining[-1].context is not None:
                break
        if joining:
            batch.admit(joining)
        elif batch:
            batch.step()
        finished = total - len(waiting) - len(batch)
        if progress and finished > done:
            done = finished
            progress(done, total)
