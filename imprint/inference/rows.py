"""What one generated sequence is (`Row`, and the prefilled `Context` rows may continue), and where its text ends:
the stop tokens of a model, and the answer rule every answer follows.

An answer (`imprint ask`, `imprint eval`, a served one-question chat on a module, a served answer with evidence)
is greedy unless asked otherwise, may not open with a blank line or a stop token, ends at the end of its first line
or before the next "Question:", and is cut by `cut_answer`. One rule, used by every caller through `answer_row`.
The engine (`engine.py`) decodes rows; nothing here imports it.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from imprint.inference.sampling import Sampling

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter on this row" in a mixed batch
ANSWER_STOPS = ("\n", "Question:")  # a base model keeps going after its answer
_BLANK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its blank ids, computed once


@dataclass(frozen=True)
class Context:
    """A prefilled KV cache over `length` tokens (e.g. the whole corpus) that rows continue from."""

    cache: DynamicCache
    length: int


@dataclass(eq=False)
class Row:
    """One sequence to generate and, once done, its text and why it stopped.

    `on_delta` (called on the engine's thread) receives text as soon as it can no longer change: text that
    could still turn into a stop string, or an incomplete UTF-8 character, is held back until it is settled.
    An `answer` row's text is cut by the answer rule (`cut_answer`) as it streams and at its end.
    """

    prompt_ids: list[int]
    sampling: Sampling
    stop_ids: frozenset[int] = frozenset()
    adapter: str = BASE_ADAPTER
    prefix: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # per layer (1, kv_heads, n, head_dim)
    context: Context | None = None
    lstrip: bool = False  # drop leading whitespace of the text (" Paris" after "Answer:")
    answer: bool = False  # cut the text by the answer rule
    suppress_first: frozenset[int] = frozenset()  # tokens that may not open the text (blank lines, EOS)
    on_delta: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] = lambda: False
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # of each generated token, stop token included
    text: str = ""
    finish_reason: str | None = None
    generator: torch.Generator | None = None  # the row's own sampling generator, seeded on first use
    _sent: int = 0

    @property
    def prefix_len(self) -> int:
        if self.context is not None:
            return self.context.length
        return 0 if self.prefix is None else self.prefix[0][0].shape[-2]

    @property
    def prompt_tokens(self) -> int:
        """Tokens the row attends to before its first generated one (a context counts)."""
        return len(self.prompt_ids) + (self.context.length if self.context is not None else 0)

    def _shown(self, text: str) -> str:
        return cut_answer(text) if self.answer else text

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
            self.text = self._shown(text[:cut])
            self._finish("stop")
            return
        self.text = self._shown(text)
        if len(self.ids) >= self.sampling.max_tokens:
            self._finish("length")
            return
        settled = len(text.rstrip("\ufffd"))  # a partial UTF-8 character decodes to U+FFFD until complete
        hold = max((_open_stop(text[:settled], stop) for stop in self.sampling.stop), default=0)
        # the answer rule only ever shortens the end of a settled text, so what it shows now stays a prefix
        self._emit(len(self._shown(text[: settled - hold])))

    def end(self, reason: str) -> None:
        """End the row where an engine elsewhere ended it (vLLM: the end of its stream), unless it already ended."""
        if self.finish_reason is None:
            self._finish(reason)

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


def cut_answer(text: str) -> str:
    """A base model keeps going after its answer: keep the first line, without a trailing 'Question:'."""
    return text.split("\n", 1)[0].split("Question:", 1)[0].strip().strip('[]*"').strip()


def stop_token_ids(tokenizer, model=None) -> frozenset[int]:
    """Tokens that end any generation: EOS, and any end-of-turn ids the model's generation config lists."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return frozenset(i for i in ids if isinstance(i, int))


def _newline_ids(tokenizer) -> set[int]:
    ids = [tokenizer.eos_token_id] + [t for t in tokenizer.convert_tokens_to_ids(["\n", "Ċ"]) if t is not None]
    return {t for t in ids if t is not None and t != tokenizer.unk_token_id}


def blank_ids(tokenizer) -> frozenset[int]:
    """EOS, the newline tokens and every blank-line token ("\\n\\n"): none may open an answer, or a small base model
    answers with blank lines and "Answer:" repeated. A lone space stays allowed: Gemma spells " 412" as "▁" +
    digits."""
    cached = _BLANK.get(tokenizer)
    if cached is None:
        blank = {i for t, i in tokenizer.get_vocab().items() if _is_line_break(tokenizer.convert_tokens_to_string([t]))}
        cached = frozenset((blank | _newline_ids(tokenizer)) - {tokenizer.pad_token_id})
        _BLANK[tokenizer] = cached
    return cached


def _is_line_break(text: str) -> bool:
    return "\n" in text and not text.strip()


def answer_row(tokenizer, prompt_ids: list[int], max_new_tokens: int, stop_ids=frozenset(), sampling=None, **placement):
    """A row that generates an answer by the answer rule; `placement` says where it runs (adapter, prefix,
    context: see `Row`). Greedy, unless `sampling` (a `Sampling`) asks otherwise: its temperature, top-p, seed and
    penalties and extra stop strings apply, its token budget does not."""
    if sampling is None:
        sampling = Sampling(max_new_tokens, temperature=0.0, stop=ANSWER_STOPS)
    else:
        stop = ANSWER_STOPS + tuple(s for s in sampling.stop if s not in ANSWER_STOPS)
        sampling = dataclasses.replace(sampling, max_tokens=max_new_tokens, stop=stop)
    # the rule strips the answer itself: stops are found in the text as generated, so " \nfoo" answers ""
    stop_ids = frozenset(stop_ids) | _newline_ids(tokenizer)
    return Row(list(prompt_ids), sampling, stop_ids, suppress_first=blank_ids(tokenizer), answer=True, **placement)
