"""Context distillation targets for the prefix method: what the base model predicts with the source in context.

The teacher is the frozen base model (no prefix) reading a record's source chunks followed by the record; at
each position the record trains on, it keeps the teacher's top-k next tokens and their probabilities
(renormalised over the k). The student, base + trained prefix without the chunks, is then pulled towards that
distribution (Cartridges' context-distillation objective, with top-k targets) as well as towards the record's
own next token (imprint.train.loss.causal_lm_loss mixes both in one pass over the vocabulary).

The teacher runs once per training set, forward only, and its targets are cached beside the run's checkpoint
(`runs/<name>/teacher-<digest>.pt`, imprint.train.teacher), so a resumed run or a rerun with the same data does
not pay it again.
"""

from __future__ import annotations

from pathlib import Path

from imprint.train.data import Example
from imprint.train.teacher import teacher_targets


def _context_ids(tokenizer, texts: list[str], budget: int) -> list[int]:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = tokenizer.encode("\n\n".join(texts) + "\n\n", add_special_tokens=False)
    return bos + ids[-budget:]


def with_teacher_targets(
    model,
    tokenizer,
    examples: list[Example],
    sources: list[list[str]],
    top_k: int,
    context_tokens: int,
    cache_dir: Path | None = None,
    batch_tokens: int = 4096,
    progress=None,
) -> list[Example]:
    """`examples` with teacher targets for those whose `sources` (chunk texts, one list per example) are known."""
    contexts = {i: _context_ids(tokenizer, texts, context_tokens) for i, texts in enumerate(sources) if texts}
    return teacher_targets(model, tokenizer, examples, contexts, top_k, cache_dir, batch_tokens, progress)
