"""The steps of answering, each answer with a confidence, its evidence, and the right to abstain.

The modes are `imprint.answer.modes.Mode`; the one thing that answers is `imprint.system.System` (model + retriever
+ corpus + calibration), which every caller uses: `imprint ask`, `chat`, `calibrate`, `eval`, `diff` and the server.
What it runs is here: `retrieve` the passages, `answer_prompt` for each question, rows by the answer rule
(`imprint.inference.answer_row`), decoded by the one inference engine, then `make_answers`.

When a retriever is given, every answer carries evidence: for retrieval modes the chunks the model read, for
closed-book modes the chunks retrieved for question + answer, so the user sees whether the corpus supports what
the weights said (`supported`). Confidence starts as the geometric mean of the answer tokens' probabilities and
is mapped through the collection's calibration when one was fitted (`imprint calibrate`), which also decides when
to abstain: the answer then says the corpus does not contain it, and the model's guess is kept in `guess`.
`Answer.record()` is the one serialised form (`imprint ask --json`, the API's `imprint` field, scorecard rows).

`module+rag` also answers closed book, to see what the module's weights say on their own (`conflict`): when the
retrieved passages do not back that answer (a fact the corpus has since changed or removed), the conflict is
flagged, and the evidence wins: if the weights still overrode the passages, the answer shown is the top passage's
quote, not the stale value, and the answer says so (`overridden`; the stale value stays in `guess` and
`conflict`). That is a behaviour for the user, not the model's answer: `Answer.generated` is what the model wrote
(or the abstention), and evaluation scores that, with the override scored apart (`imprint.evaluate.run`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch

from imprint.answer.calibration import Calibration, features
from imprint.answer.modes import MODES, RETRIEVAL_MODES, Mode
from imprint.answer.normalize import normalize
from imprint.inference import Context, answer_row, cut_answer, generate, stop_token_ids
from imprint.prompts import completion_prompt, context_prompt, qa_prompt

ABSTAIN_TEXT = "Not in my knowledge: the corpus does not say."
__all__ = [
    "ABSTAIN_TEXT",
    "MODES",
    "RETRIEVAL_MODES",
    "Answer",
    "Generated",
    "Mode",
    "answer_prompt",
    "confidence",
    "cut_answer",
    "greedy_answers",
    "make_answers",
    "retrieve",
]


RECORD_FIELDS = ("answer", "confidence", "evidence", "mode", "module", "abstained", "supported", "latency_ms",
                 "prompt_tokens", "conflict", "overridden")  # fmt: skip


@dataclass(frozen=True)
class Answer:
    answer: str
    confidence: float
    mode: str
    module: str | None = None
    evidence: list = field(default_factory=list)  # [{doc_id, title, chunk_id, quote, score}]
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    abstained: bool = False
    supported: bool | None = None  # does a retrieved sentence about the question say it? None without a retriever
    guess: str = ""  # what the model generated, also when it abstained
    signals: dict = field(default_factory=dict)  # the raw inputs of confidence and abstention
    conflict: dict | None = None  # module+rag: the module's closed-book answer and whether the evidence backs it
    overridden: bool = False  # module+rag: `answer` is the top passage's quote, not what the model wrote (`guess`)

    @property
    def generated(self) -> str:
        """What the model wrote, as the answer rule cut it, or the abstention: never the evidence's quote."""
        return ABSTAIN_TEXT if self.abstained else self.guess

    def to_dict(self) -> dict:
        return asdict(self)

    def record(self) -> dict:
        """The answer as every surface shows it: `imprint ask --json`, the API's `imprint` field (with the text as
        the message) and each scorecard row."""
        return {k: getattr(self, k) for k in RECORD_FIELDS}


class Generated(NamedTuple):
    guess: str  # the answer as generated, cut by the answer rule
    p: float  # geometric-mean probability of the answer's tokens
    prompt_tokens: int
    latency_ms: float  # the batch's wall time shared over its answers


def confidence(tokenizer, row) -> float:
    """Geometric-mean probability of the answer's tokens: the first as many generated tokens as the answer has."""
    if not row.text:
        return 0.0
    n = len(tokenizer.encode(row.text, add_special_tokens=False))
    kept = row.logprobs[: max(1, n)]
    return float(torch.tensor(kept).mean().exp())


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 24, batch_size: int = 16,
                   progress=None, context: Context | None = None) -> list[Generated]:  # fmt: skip
    """Greedy answers by the answer rule for `prompts` (continuations of `context` when given)."""
    t0 = time.perf_counter()
    stop_ids = stop_token_ids(tokenizer, model)
    special = context is None  # a continuation of a context needs no BOS of its own
    rows = [answer_row(tokenizer, tokenizer(p, add_special_tokens=special).input_ids, max_new_tokens, stop_ids,
                       context=context) for p in prompts]  # fmt: skip
    generate(model, tokenizer, rows, max_batch=batch_size, progress=progress)
    latency = (time.perf_counter() - t0) * 1000 / max(1, len(rows))
    return [Generated(r.text, confidence(tokenizer, r), r.prompt_tokens, latency) for r in rows]


def context_window(model) -> int:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    return int(getattr(config, "max_position_embeddings", 0) or 0)


def _content_words(text: str) -> list[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return [w for w in normalize(text).split() if w not in STOPWORDS_EN]


def support(answer: str, text: str) -> float:
    """Share of the answer's content words (stopwords dropped) that occur in `text`: 1.0 when all of them do.

    A strong sign of a made-up answer: asked what the corpus does not say, a small model still answers, but with
    words the evidence does not contain ("Allianz", "Python", "business casual").
    """
    words = _content_words(answer) or normalize(answer).split()
    if not words:
        return 0.0
    present = set(normalize(text).split())
    return sum(w in present for w in words) / len(words)


# `supported` needs a sentence that is about the question: at least this close to it (MiniLM cosine; answerable
# questions' best evidence sentence scored 0.37-0.89 on the sample) and within SUPPORT_MARGIN of the closest one
SUPPORT_MIN_RELEVANCE = 0.3
SUPPORT_MARGIN = 0.15


def _evidence(retriever, questions: list[str], guesses: list[str], hits: list, k: int | None):
    """Evidence records, the relevance and support signals, and whether the corpus backs each answer, the sentences
    of every hit embedded in one batch.

    `supported`: a retrieved sentence that is itself about the question, or next to one that is (close to it in
    meaning: at least SUPPORT_MIN_RELEVANCE, and within SUPPORT_MARGIN of the closest sentence), holds at least half
    of the answer's content words. Words that merely occur somewhere in the retrieved text do not back an answer:
    asked who manages one office, the name of another office's manager occurs in the corpus without answering it
    (`bench/support_rule.py`: on squad_dev, wrong answers said supported 10% -> 2%, right ones 99.5% -> 97%)."""
    from imprint.retrieval import sentence_similarities

    lookups = [f"{q} {a}".strip() for q, a in zip(questions, guesses, strict=True)]
    # closed-book modes: look up what the weights said
    hits = [h if h is not None else retriever.search(lookup, k) for h, lookup in zip(hits, lookups, strict=True)]
    scored = sentence_similarities([([lookup, q], h) for lookup, q, h in zip(lookups, questions, hits, strict=True)])
    out = []
    for guess, found, sentences in zip(guesses, hits, scored, strict=True):
        if not found:
            out.append(([], 0.0, 0.0, False))
            continue
        quotes = [max(group, key=lambda s: s[1][0])[0] for group in sentences]  # closest to question + answer
        evidence = [
            {"doc_id": h.doc_id, "title": h.title, "chunk_id": h.chunk_id, "quote": quote, "score": h.score}
            for h, quote in zip(found, quotes, strict=True)
        ]
        relevance = max(cos[1] for group in sentences for _, cos in group)  # the sentence closest to the question
        about = [(text, near) for group in sentences for text, near in _with_neighbours(group)]
        floor = max(SUPPORT_MIN_RELEVANCE, relevance - SUPPORT_MARGIN)
        backed = any(cos >= floor and support(guess, text) >= 0.5 for text, cos in about)
        out.append((evidence, relevance, max(support(guess, h.text) for h in found), backed))
    return out


def _with_neighbours(group: list[tuple[str, list[float]]]) -> list[tuple[str, float]]:
    """Each sentence of a passage with how close it or a sentence next to it is to the question: "Ines Vathanakul
    has been COO since 2021. She oversees manufacturing." is about manufacturing in its second sentence and names
    the person in its first."""
    near = [cos[1] for _, cos in group]
    return [(text, max(near[max(0, i - 1) : i + 2])) for i, (text, _) in enumerate(group)]


def answer_prompt(question: str, hits, completion: bool = False) -> str:
    """Closed book (`hits` None) or with the retrieved passages; a completion probe is continued as given."""
    passages = None if hits is None else [(h.title, h.text) for h in hits]
    if completion:
        return completion_prompt(question, passages)
    return qa_prompt(question) if passages is None else context_prompt(question, passages)


def retrieve(retriever, questions: list[str], mode: Mode, k: int | None) -> tuple[list, list[float]]:
    """The passages each question is answered from (None for modes that answer without them) and search times."""
    hits, search_ms = [None] * len(questions), [0.0] * len(questions)
    if Mode.parse(mode).retrieves:
        for i, q in enumerate(questions):
            t0 = time.perf_counter()
            hits[i] = retriever.search(q, k)
            search_ms[i] = (time.perf_counter() - t0) * 1000
    return hits, search_ms


def make_answers(generated: list[Generated], questions, hits, search_ms, mode: Mode, module: str | None, retriever,
                 calibration: Calibration | None, k: int | None,
                 closed_book: list[str] | None = None) -> list[Answer]:  # fmt: skip
    """Answers from generated text: evidence and support (with a retriever), calibrated confidence, abstention, and
    with `closed_book` (the same module's answers without passages) the conflict of the two."""
    guesses = [g.guess for g in generated]
    found = _evidence(retriever, questions, guesses, hits, k) if retriever is not None else None
    conflicts = [None] * len(questions)
    if closed_book is not None:
        conflicts = [_conflict(c, g, h) for c, g, h in zip(closed_book, guesses, hits, strict=True)]
    answers = []
    for i, (guess, p, prompt_tokens, latency) in enumerate(generated):
        evidence, relevance, supp, backed = found[i] if found else ([], None, None, None)
        feats = features(p, relevance, supp)
        confidence = calibration.confidence_of(feats) if calibration else p
        abstained = not guess or (calibration.should_abstain(feats) if calibration else False)
        overridden = bool(
            not abstained
            and conflicts[i]
            and conflicts[i]["flagged"]
            and conflicts[i]["answer_is_closed_book"]
            and evidence
        )
        answers.append(
            Answer(
                answer=ABSTAIN_TEXT if abstained else evidence[0]["quote"] if overridden else guess,
                confidence=round(confidence, 4),
                mode=str(mode),
                module=module,
                evidence=evidence,
                latency_ms=round(latency + search_ms[i], 1),
                prompt_tokens=prompt_tokens,
                abstained=abstained,
                supported=backed,
                guess=guess,
                signals=dict(zip(("logprob", "relevance", "support"), (round(f, 4) for f in feats), strict=True)),
                conflict=conflicts[i],
                overridden=overridden,
            )
        )
    return answers


def _conflict(closed_book: str, answer: str, hits) -> dict:
    """The module's closed-book answer against the passages its module+rag answer read: flagged when the passages
    do not contain every content word of it (the corpus no longer says it, or never did). An answer with no words
    (empty, or punctuation only) says nothing the passages could contradict: never flagged."""
    said = bool(normalize(closed_book).split())
    backing = support(closed_book, "\n".join(h.text for h in hits or [])) if said else 1.0
    return {
        "closed_book": closed_book,
        "support": round(backing, 4),
        "flagged": backing < 1.0,
        "answer_is_closed_book": normalize(answer) == normalize(closed_book),
    }
