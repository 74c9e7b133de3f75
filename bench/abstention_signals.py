"""Which signals tell an unanswerable question from an answerable one: the evidence behind imprint's abstention.

Answers the sample eval set (40 answerable + 10 unanswerable questions) in `rag` mode with the embedded
gemma-3-270m, then measures, for each candidate signal, how well it separates answerable from unanswerable
questions (ROC AUC: 0.5 is chance, 1.0 perfect; below 0.5 the signal points the wrong way):

- `logprob`, `relevance`, `support`: the three signals imprint's calibration uses (imprint/answer/calibration.py).
- `coverage`: how much of the question the retrieved chunks cover, token by token (IDF-weighted recall of the
  question's MiniLM token embeddings against the chunks' tokens, as BERTScore computes recall), and
  `worst_term`: the least-covered of the question's rarer half of tokens.
- `consistency`: mean token F1 between the answer and the answers given to the same question with the passages
  perturbed (top 2 only, reversed order, top 1 dropped).
- `refusal`: log-probability the model gives to " Unknown" / " not stated" right after the rag prompt (with the
  prompt told to answer "not stated" when the passages do not say).

Then it cross-validates the abstention fit (imprint.evaluate.calibration.fit_calibration, 5 folds, 10 seeds)
for feature sets built from those signals and prints the abstention rates on unanswerable and answerable
questions. Nothing here is tuned on: it only reports.

    python bench/abstention_signals.py [--k 4]
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from imprint import pipeline
from imprint.answer import greedy_answers
from imprint.evaluate.calibration import fit_calibration
from imprint.evaluate.evalset import load_eval_set
from imprint.evaluate.metrics import token_f1
from imprint.models import load_base, wants_autocast
from imprint.prompts import context_prompt
from imprint.retrieval import RetrievalConfig, Retriever
from imprint.retrieval import embed as embedding
from imprint.system import answer_questions
from imprint.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "imprint" / "data" / "sample"
REFUSE = "If the passages do not say, answer: not stated.\n\n"
PERTURBATIONS = {"top 2": lambda h: h[:2], "reversed": lambda h: h[::-1], "first dropped": lambda h: h[1:]}


def coverage_signals(questions, hits_of, chunk_texts):
    """(coverage, worst_term) per question, from MiniLM token embeddings and chunk-level IDF."""
    model = embedding._model()
    tok = model.tokenizer
    df = Counter()
    for text in chunk_texts:
        df.update(set(tok.tokenize(text.lower())))
    n = len(chunk_texts)
    special = {tok.cls_token, tok.sep_token, tok.pad_token}

    def token_vectors(text):
        vectors = model.encode([text], output_value="token_embeddings", show_progress_bar=False)[0]
        tokens = tok.convert_ids_to_tokens(tok(text, truncation=True, max_length=256)["input_ids"])
        vectors = torch.nn.functional.normalize(vectors.float(), dim=-1).numpy()[: len(tokens)]
        keep = [i for i, t in enumerate(tokens) if t not in special and re.search(r"\w", t)]
        return [tokens[i] for i in keep], vectors[keep]

    out = []
    for question, hits in zip(questions, hits_of, strict=True):
        tokens, qv = token_vectors(question)
        weight = np.array([math.log((n + 1) / (df.get(t, 0) + 0.5)) for t in tokens])
        chunk_vectors = np.concatenate([token_vectors(h.text)[1] for h in hits])
        best = (qv @ chunk_vectors.T).max(1)
        rare = weight >= np.median(weight)
        out.append((float((weight * best).sum() / weight.sum()), float(best[rare].min())))
    return out


@torch.inference_mode()
def refusal_signal(model, tokenizer, prompts, continuations=(" Unknown", " not stated")) -> list[float]:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=wants_autocast(model))
    firsts = [tokenizer(c, add_special_tokens=False).input_ids[0] for c in continuations]
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with autocast:
            logits = model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        out.append(max(float(logits[t]) for t in firsts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4, help="retrieved chunks per question")
    args = parser.parse_args()
    t_start = time.perf_counter()
    ws = Workspace.open(Path(tempfile.mkdtemp()) / "ws")
    pipeline.add(ws, [str(SAMPLE / "corpus")])
    items = load_eval_set(SAMPLE / "eval.jsonl") + load_eval_set(SAMPLE / "eval_unanswerable.jsonl")
    questions = [i.question for i in items]
    answerable = np.array([bool(i.answers) for i in items])
    base = load_base("gemma-3-270m")
    retriever = Retriever.open(ws, RetrievalConfig(k=args.k))
    answers = answer_questions(base.model, base.tokenizer, questions, "rag", retriever=retriever, k=args.k)
    hits_of = [retriever.search(q, args.k) for q in questions]
    signals = {name: np.array([a.signals[name] for a in answers]) for name in ("logprob", "relevance", "support")}
    cov = coverage_signals(questions, hits_of, [c.text for c in ws.chunks()])
    signals["coverage"] = np.array([c for c, _ in cov])
    signals["worst_term"] = np.array([w for _, w in cov])
    agreement = np.zeros(len(items))
    for cut in PERTURBATIONS.values():
        prompts = [
            context_prompt(q, [(h.title, h.text) for h in cut(hits)])
            for q, hits in zip(questions, hits_of, strict=True)
        ]
        for i, (guess, *_rest) in enumerate(greedy_answers(base.model, base.tokenizer, prompts, 24, 16)):
            agreement[i] += token_f1(guess, [answers[i].guess]) / len(PERTURBATIONS) if answers[i].guess else 0.0
    signals["consistency"] = agreement
    refuse_prompts = [
        context_prompt(q, [(h.title, h.text) for h in hits]).replace("\n\n", f" {REFUSE}", 1)
        for q, hits in zip(questions, hits_of, strict=True)
    ]
    signals["refusal"] = -np.array(refusal_signal(base.model, base.tokenizer, refuse_prompts))

    correct = [
        bool(i.answers) and token_f1(a.guess, list(i.answers)) >= 0.5 for i, a in zip(items, answers, strict=True)
    ]
    print(f"\nrag, k={args.k}: {answerable.sum()} answerable ({sum(correct)} answered right), "
          f"{(~answerable).sum()} unanswerable")  # fmt: skip
    print(f"{'signal':<13}{'AUC':>6}{'answerable median':>19}{'unanswerable median':>21}")
    for name, values in signals.items():
        auc = roc_auc_score(answerable, values)
        print(f"{name:<13}{auc:>6.3f}{np.median(values[answerable]):>19.3f}{np.median(values[~answerable]):>21.3f}")
    print("(refusal is the negated log-probability of refusing, so that higher means 'answerable' for every row)")

    used = ("logprob", "relevance", "support")  # imprint's calibration features
    sets = [used, *((*used, extra) for extra in ("coverage", "worst_term", "consistency", "refusal"))]
    print("\nabstention, 5-fold cross-validated, mean of 10 shuffles (target: >= 80% unanswerable, <= 10% answerable)")
    print(f"{'features':<48}{'unanswerable':>13}{'answerable':>12}")
    for names in sets:
        rates = []
        for seed in range(10):
            rows = [
                {"id": i.id, "features": [float(signals[f][n]) for f in names], "correct": c, "answerable": bool(a)}
                for n, (i, c, a) in enumerate(zip(items, correct, answerable, strict=True))
            ]
            report = fit_calibration("rag", rows, seed=seed).report
            rates.append((report["abstain_unanswerable_cv"], report["abstain_answerable_cv"]))
        unans, ans = np.mean([u for u, _ in rates]), np.mean([a for _, a in rates])
        print(f"{' + '.join(names):<48}{unans:>13.0%}{ans:>12.1%}")
    print(f"\nwall clock: {time.perf_counter() - t_start:.0f} s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
