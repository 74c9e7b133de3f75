"""From synthetic records to padded, length-bucketed token batches.

Text records are trained on every token; question-answer records only on the answer (the question is the
prompt), in the exact prompt format `imprint ask` uses, so the module learns to retrieve the fact from its
weights when asked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from imprint.prompts import qa_prompt
from imprint.synth.records import SynthRecord

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    record_id: str

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def encode_record(record: SynthRecord, tokenizer, max_len: int) -> Example:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]
    if record.kind == "qa":
        prompt = bos + tokenizer.encode(qa_prompt(record.question), add_special_tokens=False)
        answer = tokenizer.encode(" " + record.answer.strip(), add_special_tokens=False) + eos
        ids = (prompt + answer)[-max_len:]
        labels = ([IGNORE] * len(prompt) + answer)[-max_len:]
    else:
        ids = (bos + tokenizer.encode(record.text, add_special_tokens=False) + eos)[:max_len]
        labels = [IGNORE] * len(bos) + ids[len(bos) :]
    return Example(ids, labels, record.id)


def make_batches(examples: list[Example], batch_tokens: int, pad_id: int, rng: random.Random) -> list[dict]:
    """Group examples of similar length so padding stays small; batch order is shuffled with `rng`."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), rng.random()))
    groups, current, longest = [], [], 0
    for i in order:
        n = len(examples[i].input_ids)
        if current and max(longest, n) * (len(current) + 1) > batch_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        groups.append(current)
    rng.shuffle(groups)
    return [collate([examples[i] for i in g], pad_id) for g in groups]


def collate(batch: list[Example], pad_id: int) -> dict:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "n_tokens": int(mask.sum())}
