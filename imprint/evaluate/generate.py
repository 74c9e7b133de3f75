"""Eval questions generated from the corpus by any generator, worded differently from it and kept out of training.

For users with no hand-written eval set: a generator (an OpenAI-compatible endpoint, a local model, or the
scripted one in tests) reads one chunk at a time and writes a question a reader of that chunk could answer, in
its own words, with a short answer. An item is kept only when
- it parses as `Question: ...` / `Answer: ...`;
- its answer appears in the chunk (after normalisation): the corpus can answer it;
- its question is not a copy of the chunk's wording (word-trigram containment below `max_overlap`).

The set is written to `<workspace>/evalsets/`, which no training stage reads; the leakage check of `imprint
eval` then proves no generated question is in the synthetic training data either.
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from pathlib import Path

from imprint.errors import ImprintError
from imprint.evaluate.evalset import EvalItem, write_eval_set
from imprint.evaluate.leakage import ngram_containment
from imprint.evaluate.metrics import normalize

PROMPT = """Read the passage, then write one question that a reader of the passage can answer from it, and the \
answer. Word the question differently from the passage (do not copy its phrases). The answer must be short \
(a name, date, number or a few words) and stated in the passage.

Passage from {title!r}:
{text}

Question:"""

_PARSE = re.compile(r"^\s*(?P<question>[^\n]+?\?)\s*\n+\s*Answer:\s*(?P<answer>[^\n]+)", re.IGNORECASE)


def parse_question(completion: str) -> tuple[str, str] | None:
    """(question, answer) from a completion that continues after `Question:`, or None."""
    match = _PARSE.search(completion)
    if not match:
        return None
    answer = match.group("answer").strip().rstrip(".").strip()
    return match.group("question").strip(), answer


def generate_eval_items(
    ws,
    generator,
    n: int = 40,
    seed: int = 0,
    max_overlap: float = 0.5,
    temperature: float = 0.7,
    collection: str = "default",
) -> tuple[list[EvalItem], dict]:
    """Up to `n` generated items (one per sampled chunk of `collection`: no other collection's text reaches the
    generator, which may be an outside endpoint) and counts of what was rejected and why."""
    chunks = ws.chunks(collection=collection)
    if not chunks:
        where = "" if collection == "default" else f" --collection {collection}"
        raise ImprintError(
            f"collection {collection!r} has no documents to generate questions from: run `imprint add PATH{where}`"
        )
    titles = {d.id: d.title for d in ws.documents(collection=collection)}
    rng = random.Random(seed)
    picked = rng.sample(chunks, min(n, len(chunks))) if n <= len(chunks) else [rng.choice(chunks) for _ in range(n)]
    prompts = [PROMPT.format(title=titles.get(c.doc_id, ""), text=c.text.strip()) for c in picked]
    completions = generator.generate(prompts, max_tokens=96, temperature=temperature, stop=["\n\n"], seed=seed)
    items, rejected, seen = [], {"unparsed": 0, "answer_not_in_chunk": 0, "copies_the_chunk": 0, "duplicate": 0}, set()
    for i, (chunk, completion) in enumerate(zip(picked, completions, strict=True)):
        parsed = parse_question(completion)
        if parsed is None:
            rejected["unparsed"] += 1
            continue
        question, answer = parsed
        if f" {normalize(answer)} " not in f" {normalize(chunk.text)} " or not normalize(answer):
            rejected["answer_not_in_chunk"] += 1
            continue
        if ngram_containment(question, chunk.text) >= max_overlap:
            rejected["copies_the_chunk"] += 1
            continue
        if normalize(question) in seen:
            rejected["duplicate"] += 1
            continue
        seen.add(normalize(question))
        items.append(EvalItem(f"gen-{i:03d}-{chunk.id}", question, (answer,), "learn", doc_ids=(chunk.doc_id,)))
    return items, rejected


def write_generated(ws, items: list[EvalItem]) -> Path:
    """Save generated items under `<workspace>/evalsets/` (never read by training)."""
    if not items:
        raise ImprintError("the generator wrote no usable question (see the rejection counts)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return write_eval_set(ws.root / "evalsets" / f"generated-{stamp}.jsonl", items)
