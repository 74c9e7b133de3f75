"""Multiple choice by log-likelihood: which choice does the model find most probable after the question?

Each choice is scored as a cloze continuation of the closed-book prompt (`Question: ...\\nAnswer:` + " choice"),
the way lm-evaluation-harness scores MMLU-style items without listing letters: a 270M model picks letters near
chance, but it can still rank the choice texts. Two accuracies are reported:

- `choice_accuracy`: argmax of the summed log-probability of the choice's tokens (no length normalisation:
  favours short choices);
- `choice_accuracy_norm`: argmax of that sum divided by the choice's length in UTF-8 bytes (lm-evaluation-
  harness's `acc_norm`; tokenizer-independent, so modules on different tokenizers compare).

The context and each continuation are tokenised separately and concatenated (a word boundary never merges
into the prompt), and only the continuation positions are projected onto the vocabulary (`logits_to_keep`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from imprint.evaluate.evalset import EvalItem
from imprint.models import wants_autocast
from imprint.prompts import qa_prompt


def _split_space(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing whitespace of the context onto the continuation (lm-evaluation-harness's convention)."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


@torch.inference_mode()
def continuation_logprobs(model, tokenizer, context: str, continuations: list[str]) -> list[tuple[float, int]]:
    """(sum of log-probabilities, number of tokens) of each continuation after `context`, in one batch."""
    device = next(model.parameters()).device
    pairs = [_split_space(context, c) for c in continuations]
    ctx_ids = tokenizer(pairs[0][0], add_special_tokens=True)["input_ids"]
    conts = [tokenizer(c, add_special_tokens=False)["input_ids"] for _, c in pairs]
    if any(not c for c in conts):
        raise ValueError("a continuation encodes to no tokens")
    width = len(ctx_ids) + max(len(c) for c in conts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(conts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(conts), width), dtype=torch.long)
    for row, cont in enumerate(conts):
        seq = ctx_ids + cont
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    keep = width - len(ctx_ids) + 1  # logits from the last context position on: they predict the continuation
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model)):
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep).logits
    logprobs = logits[:, -keep:, :].float().log_softmax(-1)
    scores = []
    for row, cont in enumerate(conts):
        target = torch.tensor(cont, device=logprobs.device)
        picked = logprobs[row, : len(cont)].gather(-1, target.unsqueeze(-1)).squeeze(-1)
        scores.append((float(picked.sum()), len(cont)))
    return scores


def score_choice_items(
    model,
    tokenizer,
    items: list[EvalItem],
    prompt: Callable[[str], str] = qa_prompt,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Score every multiple-choice item; one row per item with each choice's log-likelihood and both picks."""
    model.eval()
    rows = []
    for n, item in enumerate(items, 1):
        scored = continuation_logprobs(model, tokenizer, prompt(item.question), [" " + c for c in item.choices])
        sums = [s for s, _ in scored]
        per_byte = [s / len(c.encode("utf-8")) for s, c in zip(sums, item.choices, strict=True)]
        pick = max(range(len(sums)), key=sums.__getitem__)
        pick_norm = max(range(len(per_byte)), key=per_byte.__getitem__)
        gold = item.gold_choice
        rows.append(
            {
                "id": item.id,
                "question": item.question,
                "choices": list(item.choices),
                "gold": gold,
                "logprobs": [round(s, 4) for s in sums],
                "answer": item.choices[pick],
                "answer_norm": item.choices[pick_norm],
                "correct": float(pick == gold),
                "correct_norm": float(pick_norm == gold),
            }
        )
        if progress:
            progress(n, len(items))
    return rows
