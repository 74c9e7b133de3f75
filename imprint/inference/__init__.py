"""One inference core: every token imprint generates comes from here.

- `engine`: `generate(model, tokenizer, rows)` and the `Batch` the server steps, with continuous batching of
  base, LoRA, prefix and context rows.
- `sampling`: `Sampling` settings and `sample_next_token`, the one rule that picks a row's next token.
- `rows`: what a row is (`Row`, `Context`) and where its text ends: stop tokens, and the answer rule (`answer_row`,
  `cut_answer`).
"""

from imprint.inference.engine import Batch, generate, prefill
from imprint.inference.rows import (
    ANSWER_STOPS,
    BASE_ADAPTER,
    Context,
    Row,
    answer_row,
    blank_ids,
    cut_answer,
    stop_token_ids,
)
from imprint.inference.sampling import Sampling, sample_next_token

__all__ = ["ANSWER_STOPS", "BASE_ADAPTER", "Batch", "Context", "Row", "Sampling", "answer_row", "blank_ids",
           "cut_answer", "generate", "prefill", "sample_next_token", "stop_token_ids"]  # fmt: skip
