"""Closed-book answer latency: imprint's inference engine vs Hugging Face `generate`, same prompts, same machine.

Both answer the sample eval set's questions greedily in batches of `--batch` (24 new tokens at most, stopping at a
line end, no blank line first), as `imprint ask` answers:
  (a) `model.generate` on left-padded batches, the way imprint answered before issue 16;
  (b) `imprint.answer.greedy_answers`, the one engine (continuous batching: a finished row's place is taken by
      the next question at once).
The runs alternate a, b, a, b over `--rounds` so a shared machine slows both alike. The table shows each one's
median ms per answer; the last line the ratio (b) / (a) (below 1: the engine is faster) and whether both gave
the same answers.

    python bench/answer_latency.py [--model gemma-3-270m] [--batch 16] [--rounds 2] [--questions 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from imprint.answer import greedy_answers
from imprint.inference import blank_ids, cut_answer
from imprint.inference.rows import _newline_ids
from imprint.models import DEFAULT_MODEL, load_base, wants_autocast
from imprint.prompts import qa_prompt

EVAL = Path(__file__).resolve().parents[1] / "imprint" / "data" / "sample" / "eval.jsonl"


@torch.inference_mode()
def hf_answers(model, tokenizer, prompts: list[str], batch: int) -> list[str]:
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out = []
    try:
        for start in range(0, len(prompts), batch):
            enc = tokenizer(prompts[start : start + batch], return_tensors="pt", padding=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=wants_autocast(model)):
                seqs = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                      eos_token_id=sorted(_newline_ids(tokenizer)),
                                      begin_suppress_tokens=sorted(blank_ids(tokenizer)))  # fmt: skip
            new = seqs[:, enc["input_ids"].shape[1] :]
            out += [cut_answer(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--questions", type=int, default=40)
    args = parser.parse_args()
    base = load_base(args.model)
    items = [json.loads(line) for line in EVAL.read_text().splitlines() if line][: args.questions]
    prompts = [qa_prompt(i["question"]) for i in items]
    times: dict[str, list[float]] = {"hf": [], "engine": []}
    answers: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name in ("hf", "engine"):
            start = time.perf_counter()
            if name == "hf":
                answers[name] = hf_answers(base.model, base.tokenizer, prompts, args.batch)
            else:
                answers[name] = [g.guess for g in greedy_answers(base.model, base.tokenizer, prompts, 24, args.batch)]
            times[name].append((time.perf_counter() - start) * 1000 / len(prompts))
    print(f"{'runner':<34}{'ms/answer (median)':>20}   rounds")
    labels = {"hf": "(a) HF generate, padded batches", "engine": "(b) imprint engine"}
    for name, label in labels.items():
        print(f"{label:<34}{statistics.median(times[name]):>20.1f}   {' / '.join(f'{t:.0f}' for t in times[name])}")
    same = sum(a == b for a, b in zip(answers["hf"], answers["engine"], strict=True))
    ratio = statistics.median(times["engine"]) / statistics.median(times["hf"])
    print(f"ratio (b) / (a): {ratio:.2f}; same answers: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
