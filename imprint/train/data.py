"""From synthetic records to token batches: packed rows (default) or padded, length-bucketed rows.

Text records are trained on every token; question-answer records only on the answer (the question is the
prompt), in the exact prompt format `imprint ask` uses, so the module learns to retrieve the fact from its
weights when asked.

Packing puts several examples end to end in one row of at most `width` tokens (best-fit decreasing), with
position ids that restart at each example. transformers (>= 4.53) reads restarting position ids with no
attention mask as a packed row and masks attention block-diagonally, per example (sliding windows included),
so a packed row computes exactly what the examples compute one by one (tests/train/test_packing.py). An
example's first token is never a target, so no loss crosses an example boundary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from imprint.prompts import context_prompt, qa_prompt
from imprint.synth.records import SynthRecord

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    record_id: str
    teacher_ids: torch.Tensor | None = None  # (len, k): a teacher's top-k next-token ids at labelled positions
    teacher_probs: torch.Tensor | None = None  # (len, k): their probabilities, summing to 1 (0 where unlabelled)

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def encode_record(record: SynthRecord, tokenizer, max_len: int) -> Example:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]
    if record.kind == "qa":
        passages = record.meta.get("passages")  # an open-book (reading) record: the prompt module+rag asks
        text = context_prompt(record.question, [tuple(p) for p in passages]) if passages else qa_prompt(record.question)
        prompt = bos + tokenizer.encode(text, add_special_tokens=False)
        answer = tokenizer.encode(" " + record.answer.strip(), add_special_tokens=False) + eos
        ids = (prompt + answer)[-max_len:]
        labels = ([IGNORE] * len(prompt) + answer)[-max_len:]
    else:
        ids = (bos + tokenizer.encode(record.text, add_special_tokens=False) + eos)[:max_len]
        labels = [IGNORE] * len(bos) + ids[len(bos) :]
    return Example(ids, labels, record.id)


def make_batches(examples: list[Example], batch_tokens: int, pad_id: int, rng: random.Random) -> list[dict]:
    """Padded batches of examples of similar length, so padding stays small; batch order is shuffled."""
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


def pack_rows(lengths: list[int], width: int, rng: random.Random) -> list[list[int]]:
    """Best-fit decreasing: indices of examples per row, each row at most `width` tokens (ties broken by `rng`)."""
    if max(lengths, default=0) > width:
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a row of {width}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], rng.random()))
    rows: list[list[int]] = []
    by_room: list[list[int]] = [[] for _ in range(width + 1)]  # row numbers, by tokens still free
    for i in order:
        n = lengths[i]
        room = next((r for r in range(n, width + 1) if by_room[r]), None)
        if room is None:
            rows.append([])
            row = len(rows) - 1
            room = width
        else:
            row = by_room[room].pop()
        rows[row].append(i)
        by_room[room - n].append(row)
    return rows


def pack_batches(examples: list[Example], batch_tokens: int, width: int, pad_id: int, rng: random.Random):
    """Packed batches: rows of up to `width` tokens (or the longest example's length, if longer),
    `batch_tokens // width` rows a batch, in shuffled order."""
    width = max([width] + [len(e.input_ids) for e in examples])
    rows = pack_rows([len(e.input_ids) for e in examples], width, rng)
    rng.shuffle(rows)
    per_batch = max(1, batch_tokens // width)
    return [
        collate_packed([[examples[i] for i in row] for row in rows[start : start + per_batch]], pad_id)
        for start in range(0, len(rows), per_batch)
    ]


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
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels, "n_tokens": int(mask.sum())}
    return out | _teacher([[(e, 0)] for e in batch], ids.shape)


def collate_packed(rows: list[list[Example]], pad_id: int) -> dict:
    """One batch of packed rows; a row's unused tail is padding that counts as one more (ignored) example."""
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    placed = []
    for r, row in enumerate(rows):
        at, spans = 0, []
        for e in row:
            n = len(e.input_ids)
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at : at + n] = torch.tensor(e.labels)
            labels[r, at] = IGNORE  # never predicted from the previous example's last token
            positions[r, at : at + n] = torch.arange(n)
            spans.append((e, at))
            at += n
        positions[r, at:] = torch.arange(width - at)
        placed.append(spans)
    n_tokens = sum(len(e.input_ids) for row in rows for e in row)
    out = {"input_ids": ids, "position_ids": positions, "labels": labels, "n_tokens": n_tokens}
    return out | _teacher(placed, ids.shape)


def _teacher(placed: list[list[tuple[Example, int]]], shape) -> dict:
    """Teacher targets laid out like the labels, when the examples carry them."""
    k = next((e.teacher_ids.shape[1] for row in placed for e, _ in row if e.teacher_ids is not None), 0)
    if not k:
        return {}
    ids = torch.zeros((*shape, k), dtype=torch.long)
    probs = torch.zeros((*shape, k), dtype=torch.float32)
    for r, row in enumerate(placed):
        for e, at in row:
            if e.teacher_ids is not None:
                n = e.teacher_ids.shape[0]
                ids[r, at : at + n] = e.teacher_ids
                probs[r, at : at + n] = e.teacher_probs.float()
    return {"teacher_ids": ids, "teacher_probs": probs}
