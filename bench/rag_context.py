"""What the reader sees in `rag` mode: whole retrieved chunks, or only their sentences closest to the question.

A 270M base model reads four ~200-token chunks poorly: it copies a neighbouring fact. This bench answers the
sample eval set (40 answerable + 10 unanswerable questions) with the embedded gemma-3-270m from the same four
retrieved chunks per question, given to the model as:

- `chunks k=4` (imprint's rag prompt) and `chunks k=2` (the top two only);
- `sentences n=4|6|8`: the n sentences of the four chunks closest in meaning to the question (MiniLM cosine),
  kept in their document order under their chunk's title.

For each it prints answer quality (EM, token F1 on the answerable questions), the prompt length, and how well
imprint's abstention signals separate answerable from unanswerable questions: ROC AUC of `support` (share of
the answer's content words found in the chunks) and of the answer's mean token probability, and the abstention
rates of imprint's calibration (imprint.evaluate.calibration.fit_calibration over logprob, relevance and support,
5-fold cross-validated, mean of 10 shuffles). Nothing is tuned here: it reports.

    python bench/rag_context.py [--k 4]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from imprint import pipeline
from imprint.answer import greedy_answers, support
from imprint.evaluate.calibration import fit_calibration
from imprint.evaluate.evalset import load_eval_set
from imprint.evaluate.metrics import exact_match, token_f1
from imprint.ingest.chunking import split_sentences
from imprint.models import load_base
from imprint.prompts import context_prompt
from imprint.retrieval import RetrievalConfig, Retriever, quote_sentences
from imprint.retrieval import embed as embedding
from imprint.workspace import Workspace

SAMPLE = Path(__file__).resolve().parents[1] / "imprint" / "data" / "sample"


def closest_sentences(question: str, hits, n: int) -> list[tuple[str, str]]:
    """The n sentences of `hits` closest to `question`, grouped by chunk in document order."""
    found = [(i, s.strip()) for i, h in enumerate(hits) for s in split_sentences(h.text) if s.strip()]
    vectors = embedding.embed([question] + [s for _, s in found])
    keep = sorted(np.argsort(-(vectors[1:] @ vectors[0]))[:n])
    grouped: dict[int, list[str]] = {}
    for j in keep:
        grouped.setdefault(found[j][0], []).append(found[j][1])
    return [(hits[i].title, " ".join(sentences)) for i, sentences in sorted(grouped.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4, help="chunks retrieved per question")
    args = parser.parse_args()
    ws = Workspace.open(Path(tempfile.mkdtemp()) / "ws")
    pipeline.add(ws, [str(SAMPLE / "corpus")])
    items = load_eval_set(SAMPLE / "eval.jsonl") + load_eval_set(SAMPLE / "eval_unanswerable.jsonl")
    answerable = np.array([bool(i.answers) for i in items])
    retriever = Retriever.open(ws, RetrievalConfig(k=args.k))
    hits = [retriever.search(i.question, args.k) for i in items]
    # imprint's relevance signal, computed as `imprint ask` does: the question's closest evidence sentence
    quoted = quote_sentences([([i.question], h) for i, h in zip(items, hits, strict=True)])
    rel = [max(cos for _, cos in per_query[0]) for per_query in quoted]
    base = load_base("gemma-3-270m")
    variants = {
        f"chunks k={args.k}": lambda q, h: [(x.title, x.text) for x in h],
        "chunks k=2": lambda q, h: [(x.title, x.text) for x in h[:2]],
        **{f"sentences n={n}": (lambda q, h, n=n: closest_sentences(q, h, n)) for n in (4, 6, 8)},
    }
    print(f"{len(items)} questions ({answerable.sum()} answerable), top {args.k} chunks each, {base.name}")
    header = f"{'context':<16}{'EM':>7}{'F1':>7}{'prompt tok':>12}{'s/question':>12}"
    print(header + f"{'AUC support':>13}{'AUC prob':>10}{'abstains: unans. / ans. (cv)':>31}")
    for name, context in variants.items():
        prompts = [context_prompt(i.question, context(i.question, h)) for i, h in zip(items, hits, strict=True)]
        start = time.perf_counter()
        generated = greedy_answers(base.model, base.tokenizer, prompts, 24, 16)
        seconds = (time.perf_counter() - start) / len(items)
        guesses = [g[0] for g in generated]
        supp = np.array([max(support(g, x.text) for x in h) for g, h in zip(guesses, hits, strict=True)])
        prob = np.array([g[1] for g in generated])
        gold = [list(i.answers) for i in items]
        em = np.mean([exact_match(g, a) for g, a, ok in zip(guesses, gold, answerable, strict=True) if ok])
        f1 = np.mean([token_f1(g, a) for g, a, ok in zip(guesses, gold, answerable, strict=True) if ok])
        rows = [
            {
                "features": [math.log(max(p, 1e-6)), r, s],
                "correct": bool(a) and token_f1(g, a) >= 0.5,
                "answerable": bool(a),
            }
            for g, p, r, s, a in zip(guesses, prob, rel, supp, gold, strict=True)
        ]
        rates = [fit_calibration("rag", rows, seed=seed).report for seed in range(10)]
        unans = np.mean([r["abstain_unanswerable_cv"] for r in rates])
        ans = np.mean([r["abstain_answerable_cv"] for r in rates])
        tokens = np.mean([g[2] for g in generated])
        print(
            f"{name:<16}{em:>7.3f}{f1:>7.3f}{tokens:>12.0f}{seconds:>12.2f}"
            f"{roc_auc_score(answerable, supp):>13.3f}{roc_auc_score(answerable, prob):>10.3f}"
            f"{f'{unans:.0%} / {ans:.1%}':>31}",
            flush=True,
        )


if __name__ == "__main__":
    main()
