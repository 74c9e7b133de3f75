"""Where generated text ends: the stop tokens of a model, and the answer rule every answer follows.

An answer (`imprint ask`, `imprint eval`, a served one-question chat on a module, a served answer with evidence)
is greedy, may not open with a blank line or a stop token, ends at the end of its first line or before the
next "Question:", and is cut by `cut_answer`. One rule, used by every caller through `answer_row`.
"""

from __future__ import annotations

import weakref

from imprint.inference.sampling import Sampling

ANSWER_STOPS = ("\n", "Question:")  # a base model keeps going after its answer
_BLANK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its blank ids, computed once


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


def answer_row(tokenizer, prompt_ids: list[int], max_new_tokens: int, stop_ids=frozenset(), **placement):
    """A row that generates an answer by the answer rule; `placement` says where it runs (adapter, prefix,
    context: see `Row`)."""
    from imprint.inference.engine import Row

    sampling = Sampling(max_new_tokens, temperature=0.0, stop=ANSWER_STOPS)
    # the rule strips the answer itself: stops are found in the text as generated, so " \nfoo" answers ""
    stop_ids = frozenset(stop_ids) | _newline_ids(tokenizer)
    return Row(list(prompt_ids), sampling, stop_ids, suppress_first=blank_ids(tokenizer), answer=True, **placement)
