"""One batched decode loop for many modules at once: base rows, LoRA rows and prefix rows share every forward pass.

Why a loop of our own rather than `model.generate`: each row of a served batch has its own module, sampling
settings, stop strings, token budget and streaming consumer, and rows that finish leave the batch at once
(`generate` runs every row to the longest one and streams only batch size 1). What makes one forward pass serve
different modules:

- LoRA rows: PEFT mixed-adapter batches (`adapter_names=[...]`, one name per row, `"__base__"` for rows
  without an adapter); every LoRA layer adds each adapter's update to its own rows only.
- Prefix rows (KV-cache cartridges): the batch's cache starts with a prefix area as long as the longest prefix
  in the batch. A row's prefix fills the right end of that area and the attention mask hides the rest, so rows
  with a shorter prefix, or none (base and LoRA rows), attend to exactly what they would alone. Position ids
  come from the mask, so a prompt after an n-token prefix starts at position n, as in training.
- Prompts are left-padded; rows that finish are dropped from the cache (`batch_select_indices`) so the rest
  decode at the smaller batch size.

Full fine-tunes are whole models: the scheduler runs their rows as a separate batch on their own copy.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from imprint.models import wants_autocast

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter on this row" in a mixed batch


@dataclass(frozen=True)
class Sampling:
    """Per-row decoding settings (OpenAI semantics: temperature 0 is greedy, penalties in [-2, 2])."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def greedy(self) -> bool:
        # below 1e-5 a temperature is greedy in effect, and dividing logits by it would overflow to inf
        return self.temperature < 1e-5 or self.top_p == 0


@dataclass(eq=False)
class Row:
    """One sequence to generate and, once done, its text and why it stopped.

    `on_delta` (called on the engine's thread) receives text as soon as it can no longer change: text that
    could still turn into a stop string, or an incomplete UTF-8 character, is held back until it is settled.
    """

    prompt_ids: list[int]
    sampling: Sampling
    stop_ids: frozenset[int] = frozenset()
    adapter: str = BASE_ADAPTER
    prefix: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # per layer (1, kv_heads, n, head_dim)
    lstrip: bool = False  # drop leading whitespace of the answer (" Paris" after "Answer:")
    suppress_first: frozenset[int] = frozenset()  # tokens that may not open the answer (blank lines, EOS)
    on_delta: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] = lambda: False
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # of each generated token, stop token included
    text: str = ""
    finish_reason: str | None = None
    _sent: int = 0
    _generator: torch.Generator | None = None

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix[0][0].shape[-2]

    def push(self, token: int, logprob: float, tokenizer) -> None:
        """Append one generated token, apply stops and the token budget, and stream what is settled."""
        self.logprobs.append(logprob)
        if token in self.stop_ids:
            self._finish("stop")
            return
        self.ids.append(token)
        text = tokenizer.decode(self.ids, skip_special_tokens=True)
        if self.lstrip:
            text = text.lstrip()
        cut = min((i for i in (text.find(s) for s in self.sampling.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text = text[:cut]
            self._finish("stop")
            return
        self.text = text
        if len(self.ids) >= self.sampling.max_tokens:
            self._finish("length")
            return
        settled = len(text.rstrip("\ufffd"))  # a partial UTF-8 character decodes to U+FFFD until complete
        hold = max((_open_stop(text[:settled], stop) for stop in self.sampling.stop), default=0)
        self._emit(settled - hold)

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        self._emit(len(self.text))

    def _emit(self, upto: int) -> None:
        if upto > self._sent:
            if self.on_delta is not None:
                self.on_delta(self.text[self._sent : upto])
            self._sent = upto


def _open_stop(text: str, stop: str) -> int:
    """Length of the longest tail of `text` that is the start of `stop` (it may still become the stop string)."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _prefix_cache(model: torch.nn.Module, rows: list[Row], dtype: torch.dtype, device) -> tuple[DynamicCache, int]:
    """The batch's prefix area: each row's KV prefix right-aligned in slots as long as the longest one."""
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


def _sample(logits: torch.Tensor, rows: list[Row]) -> tuple[list[int], list[float]]:
    """Next token per row and its log-probability under the model (before penalties and temperature): penalties,
    then greedy or temperature + nucleus sampling with the row's own generator."""
    logits = logits.float()
    normaliser = logits.logsumexp(-1)
    changed = any(r.sampling.presence_penalty or r.sampling.frequency_penalty or r.suppress_first for r in rows)
    raw = logits.clone() if changed else logits
    for i, row in enumerate(rows):
        s = row.sampling
        if row.ids and (s.presence_penalty or s.frequency_penalty):
            ids, counts = torch.tensor(row.ids, device=logits.device).unique(return_counts=True)
            logits[i, ids] -= s.presence_penalty + s.frequency_penalty * counts.to(logits.dtype)
        if row.suppress_first and not row.logprobs:
            logits[i, list(row.suppress_first)] = float("-inf")
    chosen = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        s = row.sampling
        if s.greedy:
            continue
        probs = (logits[i] / s.temperature).softmax(-1)
        if s.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < s.top_p  # always keeps the most likely token
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
        if row._generator is None:
            row._generator = torch.Generator(device=probs.device)
            row._generator.manual_seed(s.seed if s.seed is not None else random.getrandbits(63))
        chosen[i] = int(torch.multinomial(probs, 1, generator=row._generator))
    index = torch.tensor(chosen, device=logits.device)
    logprobs = (raw.gather(-1, index[:, None])[:, 0] - normaliser).tolist()
    return chosen, logprobs


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
        self.rows: list[Row] = []
        self.cache = self.mask = self.positions = self.tokens = None

    def __len__(self) -> int:
        return len(self.rows)

    def fits(self, rows: list[Row]) -> bool:
        """Whether `rows` can join now (always true for an empty batch)."""
        if not self.rows or not self.window:
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
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                             use_cache=True, logits_to_keep=1, **extra)  # fmt: skip
        cache = out.cache
        tokens, logprobs = _sample(out.logits[:, -1, :], rows)
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


def generate(model: torch.nn.Module, tokenizer, rows: list[Row], router=None) -> None:
    """Decode every row to its end in one batch on `model`; results land in the rows.

    `router` (a `LoraBank`, or `PeftRouter` for PEFT's mixed batches) applies each row's LoRA `adapter`
    (`__base__`: none) inside its `route(adapters)` context, which yields extra forward arguments.
    """
    if not rows:
        return
    batch = Batch(model, tokenizer, router)
    batch.admit(rows)
    while batch:
        batch.step()
