"""A frozen teacher's next-token targets for training examples: its top-k ids and probabilities per labelled position.

Two users: the prefix method's context distillation (the base reading a record's source chunks teaches the base +
prefix without them, imprint.methods.prefix.distill) and distilled replay (`train.replay_distill`: on general
text the base's own distribution is the target, a top-k estimate of KL to the base). The teacher runs once,
forward only, in length-sorted batches; with `cache_dir` its targets are cached by a digest of the model name,
the examples and the contexts, so a resumed run or a rerun on the same data does not pay it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from imprint.train.data import IGNORE, Example


@torch.no_grad()
def _targets(model, tokenizer, contexts: list[list[int]], examples: list[Example], top_k: int):
    """Teacher top-k ids and probabilities at each labelled position of each example (one padded batch)."""
    bos = 1 if tokenizer.bos_token_id is not None else 0
    seqs = [c + e.input_ids[bos:] for c, e in zip(contexts, examples, strict=True)]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=model.device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=model.device)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)[0]
    head = model.get_output_embeddings().weight
    softcap = getattr(model.config, "final_logit_softcapping", None)
    out = []
    for row, (context, example) in enumerate(zip(contexts, examples, strict=True)):
        # label j (token j of the example) is predicted at teacher position len(context) + j - 1 - bos
        wanted = [j for j, label in enumerate(example.labels) if label != IGNORE and j >= 1]
        at = torch.tensor([len(context) + j - 1 - bos for j in wanted], device=model.device)
        logits = F.linear(hidden[row, at], head).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        top = logits.topk(top_k, dim=-1)
        out.append((wanted, top.indices.to(torch.int32).cpu(), torch.softmax(top.values, -1).to(torch.float16).cpu()))
    return out


def _digest(model_name: str, examples: list[Example], contexts: list[list[int]], top_k: int) -> str:
    digest = hashlib.sha1(f"{model_name}|{top_k}".encode())
    for e, c in zip(examples, contexts, strict=True):
        digest.update(e.record_id.encode() + torch.tensor(c, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()[:16]


def teacher_targets(
    model,
    tokenizer,
    examples: list[Example],
    contexts: dict[int, list[int]],
    top_k: int,
    cache_dir: Path | None = None,
    batch_tokens: int = 4096,
    progress=None,
) -> list[Example]:
    """`examples` with the teacher's targets for each index in `contexts`, read after that context (token ids that
    begin with BOS where the tokenizer has one; `[bos]` alone for no context). Examples of the same record id
    share one teacher pass."""
    first: dict[str, int] = {}
    for i in contexts:
        first.setdefault(examples[i].record_id, i)
    todo = sorted(first.values())
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    key = _digest(name, [examples[i] for i in todo], [contexts[i] for i in todo], top_k)
    path = cache_dir / f"teacher-{key}.pt" if cache_dir else None
    if path and path.exists():
        targets = torch.load(path, weights_only=True)
    else:
        targets = {}
        order = sorted(todo, key=lambda i: len(contexts[i]) + len(examples[i].input_ids))
        groups: list[list[int]] = []
        for i in order:  # ascending lengths: the newest member is the longest
            if not groups or (len(groups[-1]) + 1) * (len(contexts[i]) + len(examples[i].input_ids)) > batch_tokens:
                groups.append([])
            groups[-1].append(i)
        was_training = model.training
        model.eval()
        for done, group in enumerate(groups, 1):
            found = _targets(model, tokenizer, [contexts[i] for i in group], [examples[i] for i in group], top_k)
            for i, (wanted, ids, probs) in zip(group, found, strict=True):
                targets[examples[i].record_id] = (torch.tensor(wanted, dtype=torch.int32), ids, probs)
            if progress:
                progress(done, len(groups))
        model.train(was_training)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(targets, path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)
    out = list(examples)
    for i in contexts:
        wanted, ids, probs = targets[examples[i].record_id]
        full_ids = torch.zeros((len(examples[i].input_ids), top_k), dtype=torch.int32)
        full_probs = torch.zeros((len(examples[i].input_ids), top_k), dtype=torch.float16)
        full_ids[wanted.long()], full_probs[wanted.long()] = ids, probs
        out[i] = dataclasses.replace(examples[i], teacher_ids=full_ids, teacher_probs=full_probs)
    return out


def towards_teacher(example: Example) -> Example:
    """`example` with each labelled position's label replaced by its teacher's most likely token (positions the
    teacher did not predict are dropped), so that with any distillation weight the example trains towards the
    teacher alone, never towards its own text."""
    if example.teacher_ids is None:
        raise ValueError(f"example {example.record_id} has no teacher targets")
    best = example.teacher_ids.gather(1, example.teacher_probs.float().argmax(1, keepdim=True)).squeeze(1).tolist()
    known = example.teacher_probs.float().sum(1) > 0  # a labelled position the teacher did not predict is dropped
    labels = [IGNORE if label == IGNORE else (b if known[j] else IGNORE)
              for j, (label, b) in enumerate(zip(example.labels, best, strict=True))]  # fmt: skip
    return dataclasses.replace(example, labels=labels)
