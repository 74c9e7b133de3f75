"""Open-book training records: the module learns to read retrieved passages as well as to recall.

A module trained only closed book ("Question: ...\nAnswer: ...") drifts away from how the base reads a prompt
full of passages, so `module+rag` can answer worse than `rag` with the base alone (measured on squad_dev, see
bench/RESULTS.md). Reading records put a share of the training questions after passages retrieved for them by
the workspace's own retriever, in the exact prompt `module+rag` uses (`imprint.prompts.context_prompt`):
most with the passage the question was written from among the hits (the module learns to take the answer from
the evidence), the rest with distractors only (it learns to answer from its weights when the evidence misses,
which is what a module adds over retrieval). The target is the record's answer either way; the loss covers
the answer only, like every question-answer record.

Passages cost tokens: a reading record is ~`k` chunks long against a closed-book record's ~30 tokens, so the
share and `k` (`train.read`, `train.read_k`) are kept small by default and the tokens they add are reported.
"""

from __future__ import annotations

import random

from imprint.synth.records import SynthRecord

GOLD_SHARE = 0.75  # of reading records, those whose passages include the one the question was written from


def reading_records(records: list[SynthRecord], retriever, share: float, k: int, seed: int) -> list[SynthRecord]:
    """Open-book copies of `share` of the question-answer `records` (seeded), each with `k` passages.

    `retriever` is the collection's `Retriever`: its `search(question)` gives the hits a question sees at answer
    time. A gold record keeps the best-ranked hit among the record's source chunks (or puts the first source chunk
    in when retrieval missed it) at a random position among distractors; a distractor record drops every source
    chunk from the hits.
    """
    chunks, titles = retriever.chunks, retriever.titles
    questions = [r for r in records if r.kind == "qa" and r.question and r.answer]
    if share <= 0 or not questions:
        return []
    rng = random.Random(seed)
    picked = rng.sample(questions, min(len(questions), round(len(questions) * share)))
    out = []
    for record in picked:
        sources = [c for c in record.source_chunk_ids if c in chunks]
        hits = retriever.search(record.question, k + len(sources))
        gold = bool(sources) and rng.random() < GOLD_SHARE
        passages = [(h.title, h.text) for h in hits if h.chunk_id not in record.source_chunk_ids][: k - gold]
        if gold:
            by_rank = [h for h in hits if h.chunk_id in sources]
            chunk = chunks[sources[0]]
            chosen = (by_rank[0].title, by_rank[0].text) if by_rank else (titles.get(chunk.doc_id, ""), chunk.text)
            passages.insert(rng.randint(0, len(passages)), chosen)
        if not passages:
            continue
        out.append(
            SynthRecord.make(
                "read",
                record.source_chunk_ids,
                "qa",
                generator=record.generator,
                question=record.question,
                answer=record.answer,
                meta={"passages": [list(p) for p in passages], "gold": gold, "from": record.id},
            )
        )
    return out
