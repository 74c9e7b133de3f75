"""Answering in every mode, each answer with a confidence, its evidence, and the right to abstain.

Modes:
- `base`: the bare model, closed book (the prompt holds the question only).
- `module`: the base with a trained module, closed book: a right answer can only come from the weights.
- `rag`: the top-k retrieved chunks in the prompt.
- `module+rag`: a module and retrieved chunks together.
- `icl`: the entire corpus in the prompt (its KV cache computed once and reused for every question); refused with
  a clear error when the corpus does not fit the model's context window.

When a retriever is given, every answer carries evidence: for retrieval modes the chunks the model read, for
closed-book modes the chunks retrieved for question + answer, so the user sees whether the corpus supports what
the weights said (`supported`). Confidence starts as the geometric mean of the answer tokens' probabilities and
is mapped through the workspace's calibration when one was fitted (`imprint calibrate`), which also decides when
to abstain: the answer then says the corpus does not contain it, and the model's guess is kept in `guess`.

`module+rag` also answers closed book, to see what the module's weights say on their own (`conflict`): when the
retrieved passages do not back that answer (a fact the corpus has since changed or removed), the conflict is
flagged, and the evidence wins: if the weights still overrode the passages, the answer is the top passage's
quote, not the stale value (which stays in `guess` and `conflict`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch

from imprint.errors import ImprintError
from imprint.evaluate.calibration import Calibration, features, load_calibration
from imprint.evaluate.metrics import normalize
from imprint.models import DEFAULT_MODEL, wants_autocast
from imprint.prompts import CONTEXT_INSTRUCTION, completion_prompt, context_prompt, passages_block, qa_prompt

MODES = ("base", "icl", "rag", "module", "module+rag")
RETRIEVAL_MODES = ("rag", "module+rag")
ABSTAIN_TEXT = "Not in my knowledge: the corpus does not say."


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
    supported: bool | None = None  # does the retrieved evidence contain the answer? None without a retriever
    guess: str = ""  # what the model generated, also when it abstained
    signals: dict = field(default_factory=dict)  # the raw inputs of confidence and abstention
    conflict: dict | None = None  # module+rag: the module's closed-book answer and whether the evidence backs it

    def to_dict(self) -> dict:
        return asdict(self)


def cut_answer(text: str) -> str:
    """A base model keeps going after its answer: keep the first line, without a trailing 'Question:'."""
    return text.split("\n", 1)[0].split("Question:", 1)[0].strip().strip('[]*"').strip()


def _stop_ids(tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id] + [t for t in tokenizer.convert_tokens_to_ids(["\n", "Ċ"]) if t is not None]
    return sorted({t for t in ids if t is not None and t != tokenizer.unk_token_id})


def _is_line_break(text: str) -> bool:
    return "\n" in text and not text.strip()


def blank_ids(tokenizer) -> list[int]:
    """Stop tokens plus every blank-line token ("\\n\\n"): none may open an answer, or a small base model answers
    with blank lines and "Answer:" repeated. A lone space stays allowed: Gemma spells " 412" as "▁" + digits.
    Computed once per tokenizer."""
    cached = getattr(tokenizer, "_imprint_blank_ids", None)
    if cached is None:
        vocab = tokenizer.get_vocab()
        blank = [i for t, i in vocab.items() if _is_line_break(tokenizer.convert_tokens_to_string([t]))]
        cached = sorted(set(blank) | set(_stop_ids(tokenizer)) - {tokenizer.pad_token_id})
        tokenizer._imprint_blank_ids = cached
    return cached


def _greedy(tokenizer, max_new_tokens: int) -> dict:
    """generate() settings shared by every mode: greedy, stop at a line end, scores kept for confidence."""
    return {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "eos_token_id": _stop_ids(tokenizer),
        "begin_suppress_tokens": blank_ids(tokenizer),  # no empty answer
        "pad_token_id": tokenizer.pad_token_id,
        "output_scores": True,
        "return_dict_in_generate": True,
    }


def _decode(tokenizer, new_ids: torch.Tensor, scores: tuple) -> list[tuple[str, float]]:
    """(answer, geometric-mean token probability of the answer's tokens) for each generated row."""
    logprobs = torch.stack(scores, dim=1).float().log_softmax(-1)
    token_lp = logprobs.gather(-1, new_ids.unsqueeze(-1)).squeeze(-1)
    out = []
    for row in range(new_ids.shape[0]):
        answer = cut_answer(tokenizer.decode(new_ids[row], skip_special_tokens=True))
        n = len(tokenizer.encode(answer, add_special_tokens=False)) if answer else 0
        out.append((answer, float(token_lp[row, : max(1, n)].mean().exp()) if answer else 0.0))
    return out


@torch.inference_mode()
def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, progress=None):
    """Greedy answers for prompts, batched with left padding: [(answer, p, prompt_tokens, latency_ms)]."""
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    results = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            t0 = time.perf_counter()
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model)):
                out = model.generate(
                    **enc,
                    **_greedy(tokenizer, max_new_tokens),
                )
            decoded = _decode(tokenizer, out.sequences[:, enc["input_ids"].shape[1] :], out.scores)
            latency = (time.perf_counter() - t0) * 1000 / len(chunk)
            for row, (answer, p) in enumerate(decoded):
                results.append((answer, p, int(enc["attention_mask"][row].sum()), latency))
            if progress:
                progress(len(results), len(prompts))
    finally:
        tokenizer.padding_side = side
    return results


def context_window(model) -> int:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    return int(getattr(config, "max_position_embeddings", 0) or 0)


def _cache_kwarg(model) -> str:
    """transformers renamed generate's `past_key_values` to `cache` in 5.x; use whichever this version takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


@torch.inference_mode()
def _generate_in_context(model, tokenizer, documents, questions, max_new_tokens: int, progress=None, completion=False):
    """icl: the corpus is encoded once; each question (or completion prompt) continues from a copy of its KV cache."""
    device = next(model.parameters()).device
    prefix = f"{'' if completion else CONTEXT_INSTRUCTION}{passages_block(documents)}\n\n"
    prefix_ids = tokenizer(prefix, return_tensors="pt").input_ids.to(device)
    suffixes = [tokenizer(q if completion else qa_prompt(q), add_special_tokens=False).input_ids for q in questions]
    window = context_window(model)
    needed = prefix_ids.shape[1] + max((len(s) for s in suffixes), default=0) + max_new_tokens
    if window and needed > window:
        raise ImprintError(
            f"the corpus is {prefix_ids.shape[1]} tokens and does not fit the model's {window}-token context window "
            "with a question and its answer: use --mode rag (retrieved chunks) or a module instead"
        )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model))
    t0 = time.perf_counter()
    with autocast:
        cache = model(input_ids=prefix_ids, use_cache=True).past_key_values
    prefill_ms = (time.perf_counter() - t0) * 1000 / max(1, len(questions))  # shared cost, spread over questions
    results = []
    for n, suffix in enumerate(suffixes, 1):
        t0 = time.perf_counter()
        ids = torch.cat([prefix_ids, torch.tensor([suffix], device=device)], dim=1)
        with autocast:
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                **{_cache_kwarg(model): copy.deepcopy(cache)},
                **_greedy(tokenizer, max_new_tokens),
            )
        ((answer, p),) = _decode(tokenizer, out.sequences[:, ids.shape[1] :], out.scores)
        results.append((answer, p, int(ids.shape[1]), (time.perf_counter() - t0) * 1000 + prefill_ms))
        if progress:
            progress(n, len(questions))
    return results


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


def _evidence(retriever, questions: list[str], guesses: list[str], hits: list, k: int | None):
    """Evidence records plus the relevance and support signals of every answer, quotes embedded in one batch."""
    from imprint.retrieval import quote_sentences

    lookups = [f"{q} {a}".strip() for q, a in zip(questions, guesses, strict=True)]
    # closed-book modes: look up what the weights said
    hits = [h if h is not None else retriever.search(lookup, k) for h, lookup in zip(hits, lookups, strict=True)]
    quoted = quote_sentences([([lookup, q], h) for lookup, q, h in zip(lookups, questions, hits, strict=True)])
    out = []
    for guess, found, (quotes, by_question) in zip(guesses, hits, quoted, strict=True):
        if not found:
            out.append(([], 0.0, 0.0))
            continue
        evidence = [
            {"doc_id": h.doc_id, "title": h.title, "chunk_id": h.chunk_id, "quote": quote, "score": h.score}
            for h, (quote, _) in zip(found, quotes, strict=True)
        ]
        relevance = max(cos for _, cos in by_question)
        out.append((evidence, relevance, max(support(guess, h.text) for h in found)))
    return out


def _prompt(question: str, hits, completion: bool) -> str:
    """Closed book (`hits` None) or with the retrieved passages; a completion probe is continued as given."""
    passages = None if hits is None else [(h.title, h.text) for h in hits]
    if completion:
        return completion_prompt(question, passages)
    return qa_prompt(question) if passages is None else context_prompt(question, passages)


@torch.inference_mode()
def answer_questions(
    model: torch.nn.Module,
    tokenizer,
    questions: list[str],
    mode: str,
    module: str | None = None,
    retriever=None,
    corpus: list[tuple[str, str]] | None = None,
    calibration: Calibration | None = None,
    k: int | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    progress=None,
    completion: bool = False,
) -> list[Answer]:
    """Answer `questions` in `mode`; `retriever` is needed for rag modes, `corpus` [(title, text)] for icl.

    `completion`: the questions are prompts to continue as given (completion probes), not wrapped as
    `Question: ...\nAnswer:`; rag modes put the passages before the prompt."""
    if mode not in MODES:
        raise ImprintError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode in RETRIEVAL_MODES and retriever is None:
        raise ImprintError(f"mode {mode} needs a retrieval index over the corpus")
    if mode == "icl" and not corpus:
        raise ImprintError("mode icl needs the corpus: the workspace has no documents (run `imprint add PATH`)")
    model.eval()
    hits, search_ms = [None] * len(questions), [0.0] * len(questions)
    if mode in RETRIEVAL_MODES:
        for i, q in enumerate(questions):
            t0 = time.perf_counter()
            hits[i] = retriever.search(q, k)
            search_ms[i] = (time.perf_counter() - t0) * 1000
    if mode == "icl":
        generated = _generate_in_context(model, tokenizer, corpus, questions, max_new_tokens, progress, completion)
    else:
        prompts = [_prompt(q, found, completion) for q, found in zip(questions, hits, strict=True)]
        generated = _generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress)
    guesses = [g[0] for g in generated]
    found = _evidence(retriever, questions, guesses, hits, k) if retriever is not None else None
    conflicts = [None] * len(questions)
    if mode == "module+rag":  # what the weights say without the passages, checked against them
        closed = _generate(
            model, tokenizer, [_prompt(q, None, completion) for q in questions], max_new_tokens, batch_size
        )
        conflicts = [_conflict(c[0], g, found_hits) for c, g, found_hits in zip(closed, guesses, hits, strict=True)]
    answers = []
    for i, (guess, p, prompt_tokens, latency) in enumerate(generated):
        evidence, relevance, supp = found[i] if found else ([], None, None)
        feats = features(p, relevance, supp)
        confidence = calibration.confidence_of(feats) if calibration else p
        abstained = not guess or (calibration.should_abstain(feats) if calibration else False)
        overruled = bool(
            conflicts[i] and conflicts[i]["flagged"] and conflicts[i]["answer_is_closed_book"] and evidence
        )
        answers.append(
            Answer(
                answer=ABSTAIN_TEXT if abstained else evidence[0]["quote"] if overruled else guess,
                confidence=round(confidence, 4),
                mode=mode,
                module=module,
                evidence=evidence,
                latency_ms=round(latency + search_ms[i], 1),
                prompt_tokens=prompt_tokens,
                abstained=abstained,
                supported=None if supp is None else supp >= 0.5,
                guess=guess,
                signals=dict(zip(("logprob", "relevance", "support"), (round(f, 4) for f in feats), strict=True)),
                conflict=conflicts[i],
            )
        )
    return answers


def _conflict(closed_book: str, answer: str, hits) -> dict:
    """The module's closed-book answer against the passages its module+rag answer read: flagged when the passages
    do not contain every content word of it (the corpus no longer says it, or never did)."""
    backing = support(closed_book, "\n".join(h.text for h in hits or [])) if closed_book else 1.0
    return {
        "closed_book": closed_book,
        "support": round(backing, 4),
        "flagged": backing < 1.0,
        "answer_is_closed_book": normalize(answer) == normalize(closed_book),
    }


def system_name(mode: str, module: str | None = None) -> str:
    """The key a calibration is stored under: the mode, plus the module for module modes."""
    return f"{mode}:{module}" if module and mode.startswith("module") else mode


class Answerer:
    """Everything one (mode, module) needs to answer, loaded once: model, retriever, corpus, calibration.

    Retrieval and the icl corpus use one collection: `collection`, else the module's own, else `default`."""

    def __init__(
        self,
        ws,
        mode: str = "rag",
        module: str | None = None,
        model: str = DEFAULT_MODEL,
        k=None,
        retrieval=None,
        collection: str | None = None,
    ):
        from imprint.models import load_base
        from imprint.pipeline import load_module
        from imprint.retrieval import Retriever

        if mode not in MODES:
            raise ImprintError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        if mode.startswith("module") and not module:
            raise ImprintError(f"mode {mode} needs a module: pass --module NAME[@VERSION]")
        self.mode, self.k = mode, k
        self.label = None
        if mode.startswith("module"):
            self.model, self.tokenizer, manifest = load_module(ws, module)
            self.label = f"{manifest['name']}@{manifest['version']}"
            collection = collection or manifest.get("collection")
        else:
            base = load_base(model)
            self.model, self.tokenizer = base.model, base.tokenizer
        self.collection = collection or "default"
        documents = ws.documents(collection=self.collection)
        self.retriever = Retriever.open(ws, retrieval, self.collection) if documents else None
        if mode in RETRIEVAL_MODES and self.retriever is None:
            where = "" if self.collection == "default" else f" --collection {self.collection}"
            raise ImprintError(
                f"mode {mode} needs documents: collection {self.collection!r} has none (run `imprint add PATH{where}`)"
            )
        self.corpus = [(d.title, d.text) for d in documents] if mode == "icl" else None
        self.system = system_name(mode, self.label)
        self.calibration = load_calibration(ws.root, self.system, mode)

    def __call__(self, questions: list[str], progress=None, max_new_tokens: int = 24) -> list[Answer]:
        return answer_questions(
            self.model,
            self.tokenizer,
            questions,
            self.mode,
            module=self.label,
            retriever=self.retriever,
            corpus=self.corpus,
            calibration=self.calibration,
            k=self.k,
            max_new_tokens=max_new_tokens,
            progress=progress,
        )


def ask(ws, questions: list[str], mode: str = "rag", module: str | None = None, model: str = DEFAULT_MODEL):
    """One-off answers (the CLI's `imprint ask`); build an `Answerer` to answer many batches."""
    return Answerer(ws, mode, module, model)(questions)
