"""One System answers: a model (the base, or the base with a module), the retriever and corpus of one collection,
and the calibration fitted there, in one mode. `imprint ask`, `chat`, `calibrate`, `eval`, `diff` and the server
all answer through it, with the same steps:

    plan = system.plan(questions)   # retrieval, prompts, one context-limit check, rows by the answer rule
    ...decode plan.rows...          # System.answer: the engine here; the server: its shared running batch
    answers = plan.finish()         # evidence, support, conflict, calibrated confidence, abstention

`System.open` assembles one from a workspace (loading the base or the module); a caller that already holds the
parts (the server: one shared base and per-tenant retrievers) builds the dataclass directly and decodes the rows
itself, so a served answer is the answer `imprint ask` gives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from imprint.answer import Answer, Generated, answer_prompt, confidence, make_answers, retrieve
from imprint.answer.calibration import Calibration, load_calibration
from imprint.answer.modes import Mode
from imprint.errors import ImprintError
from imprint.inference import Row, Sampling, answer_row, generate, prefill, stop_token_ids
from imprint.methods.loading import load_module
from imprint.models import DEFAULT_MODEL
from imprint.prompts import CONTEXT_INSTRUCTION, context_prompt, passages_block, qa_prompt

__all__ = ["ANSWER_TOKENS", "ContextTooLong", "Mode", "Plan", "System", "answer_questions", "context_window"]

ANSWER_TOKENS = 24  # an answer's token budget unless asked otherwise: answers end at their line's end well before


class ContextTooLong(ImprintError):
    """A prompt and its answer do not fit the model's context window."""


def context_window(model) -> int:
    """The model's context window in tokens (0 when its config does not say)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    return int(getattr(config, "max_position_embeddings", 0) or 0)


@dataclass
class System:
    """What one (mode, module, collection) needs to answer. `model` is None where rows are decoded elsewhere."""

    mode: Mode
    tokenizer: object
    model: torch.nn.Module | None = None
    module: str | None = None  # `name@version` of the module whose weights answer
    collection: str | None = None  # where the retriever, the icl corpus and the calibration come from
    retriever: object | None = None
    corpus: list[tuple[str, str]] | None = None  # icl: (title, text) of every document
    calibration: Calibration | None = None
    k: int | None = None  # passages to retrieve (the retriever's default when None)
    max_context: int = 0  # the context window every prompt is checked against (0: the model's own)
    stop_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self):
        self.mode = Mode.parse(self.mode)
        if self.mode.retrieves and self.retriever is None:
            raise ImprintError(f"mode {self.mode} needs a retrieval index over the corpus")
        if self.mode.in_context and not self.corpus:
            raise ImprintError("mode icl needs the corpus: the workspace has no documents (run `imprint add PATH`)")
        if self.model is not None:
            self.stop_ids = self.stop_ids or stop_token_ids(self.tokenizer, self.model)
            self.max_context = self.max_context or context_window(self.model)

    @property
    def name(self) -> str:
        """The system's name, as its calibration is stored: the mode, and the module for module modes."""
        return self.mode.calibration_key(self.module)

    @classmethod
    def open(cls, ws, mode: Mode | str, module: str | None = None, *, model: str = DEFAULT_MODEL,
             collection: str | None = None, k: int | None = None, retrieval=None, loaded=None,
             retrievers: dict | None = None) -> System:  # fmt: skip
        """A system of workspace `ws`: the module's weights (`name[@version]`) or the base `model`'s; the collection
        `collection`, else the module's own, else `default`; that collection's retriever (`retrieval` settings)
        and calibration. `loaded` reuses weights already loaded (`(model, tokenizer, manifest or None)`) and
        `retrievers` ({collection: retriever}) indexes already open, as eval does for its systems."""
        mode = Mode.parse(mode)
        if mode.uses_module and not module:
            raise ImprintError(f"mode {mode} needs a module: pass --module NAME[@VERSION]")
        if loaded is None:
            loaded = _load(ws, module if mode.uses_module else None, model)
        weights, tokenizer, manifest = loaded
        label = f"{manifest['name']}@{manifest['version']}" if manifest and mode.uses_module else None
        collection = collection or (manifest or {}).get("collection") or "default"
        retriever = _retriever(ws, collection, retrieval, retrievers)
        if mode.retrieves and retriever is None:
            where = "" if collection == "default" else f" --collection {collection}"
            raise ImprintError(f"mode {mode} needs documents: collection {collection!r} has none (run `imprint add "
                               f"PATH{where}`)")  # fmt: skip
        corpus = [(d.title, d.text) for d in ws.documents(collection=collection)] if mode.in_context else None
        calibration = load_calibration(ws.root, mode.calibration_key(label), mode, collection)
        return cls(mode, tokenizer, weights, label, collection, retriever, corpus, calibration, k)

    # --- answering ---

    def plan(self, questions: list[str], *, completion: bool = False, max_new_tokens: int = ANSWER_TOKENS,
             sampling: Sampling | None = None, **placement) -> Plan:  # fmt: skip
        """Retrieve, build each question's prompt and its row by the answer rule (plus, for module+rag, the closed-book
        row its conflict check reads), each checked against the context window as it will be decoded.
        `completion`: the questions are prompts to continue as given (completion probes). `sampling` overrides the
        answer rule's greedy choice (a served chat that asks for a temperature); `placement` says where the rows
        run (a served module's adapter or prefix)."""
        t0 = time.perf_counter()
        hits, search_ms = retrieve(self.retriever, questions, self.mode, self.k)
        context = None
        if self.mode.in_context:
            prefix = f"{'' if completion else CONTEXT_INSTRUCTION}{passages_block(self.corpus)}\n\n"
            prefix_ids = self.tokenizer(prefix).input_ids
            prompts = [q if completion else qa_prompt(q) for q in questions]
            ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
            self._check_fits(len(prefix_ids) + max((len(i) for i in ids), default=0), max_new_tokens, corpus=True)
            context = prefill(self._decoder(), prefix_ids)  # once; each row continues a copy of its cache
        else:
            ids = [
                self.tokenizer(answer_prompt(q, h, completion)).input_ids for q, h in zip(questions, hits, strict=True)
            ]
            for row_ids in ids:
                self._check_fits(len(row_ids), max_new_tokens)
        rows = [answer_row(self.tokenizer, i, max_new_tokens, self.stop_ids, sampling=sampling, context=context,
                           **placement) for i in ids]  # fmt: skip
        if self.mode.checks_conflict:  # what the weights say without the passages, checked against them
            for q in questions:
                closed = self.tokenizer(answer_prompt(q, None, completion)).input_ids
                rows.append(answer_row(self.tokenizer, closed, max_new_tokens, self.stop_ids, **placement))
        return Plan(self, questions, hits, search_ms, rows, t0)

    @torch.inference_mode()
    def answer(self, questions: list[str], *, completion: bool = False, max_new_tokens: int = ANSWER_TOKENS,
               batch_size: int = 16, progress=None) -> list[Answer]:  # fmt: skip
        """Answer `questions` in this system's mode, decoding the plan's rows on its own model."""
        model = self._decoder()
        model.eval()
        plan = self.plan(questions, completion=completion, max_new_tokens=max_new_tokens)
        generate(model, self.tokenizer, plan.rows, max_batch=batch_size, progress=progress)
        return plan.finish()

    def __call__(self, questions: list[str], progress=None, max_new_tokens: int = ANSWER_TOKENS) -> list[Answer]:
        return self.answer(questions, progress=progress, max_new_tokens=max_new_tokens)

    def choice_prompt(self, question: str) -> str:
        """The prompt a multiple-choice item's choices continue: what this mode answers the question from."""
        if self.mode.retrieves:
            return context_prompt(question, [(h.title, h.text) for h in self.retriever.search(question, self.k)])
        if self.mode.in_context:
            return context_prompt(question, self.corpus)
        return qa_prompt(question)

    def _decoder(self) -> torch.nn.Module:
        if self.model is None:
            raise ImprintError(f"system {self.name} holds no model: its rows are decoded by the caller")
        return self.model

    def _check_fits(self, prompt_tokens: int, max_new_tokens: int, corpus: bool = False) -> None:
        window = self.max_context
        if window and prompt_tokens + max_new_tokens > window:
            if corpus:
                raise ContextTooLong(
                    f"the corpus is {prompt_tokens} tokens with the longest question and does not fit the model's "
                    f"{window}-token context window with its answer: use --mode rag (retrieved chunks) or a module"
                )
            raise ContextTooLong(
                f"This model's maximum context length is {window} tokens. However, the prompt is {prompt_tokens} "
                f"tokens and the answer may take {max_new_tokens}: ask with fewer passages (k) or a shorter question."
            )


@dataclass
class Plan:
    """A system's rows for some questions, before they are decoded: `rows[:n]` answer the questions, and for
    module+rag `rows[n:]` answer them closed book. `finish()` turns the decoded rows into answers."""

    system: System
    questions: list[str]
    hits: list
    search_ms: list[float]
    rows: list[Row]
    started: float = field(default_factory=time.perf_counter)  # latency counts from here (icl: with the prefill)

    def finish(self) -> list[Answer]:
        s, n = self.system, len(self.questions)
        latency = ((time.perf_counter() - self.started) * 1000 - sum(self.search_ms)) / max(1, n)
        generated = [Generated(r.text, confidence(s.tokenizer, r), r.prompt_tokens, latency) for r in self.rows[:n]]
        closed_book = [r.text for r in self.rows[n:]] if s.mode.checks_conflict else None
        return make_answers(generated, self.questions, self.hits, self.search_ms, s.mode, s.module, s.retriever,
                            s.calibration, s.k, closed_book)  # fmt: skip


def answer_questions(model: torch.nn.Module, tokenizer, questions: list[str], mode: Mode | str,
                     module: str | None = None, retriever=None, corpus: list[tuple[str, str]] | None = None,
                     calibration: Calibration | None = None, k: int | None = None, max_new_tokens: int = ANSWER_TOKENS,
                     batch_size: int = 16, progress=None, completion: bool = False) -> list[Answer]:  # fmt: skip
    """Answer `questions` with weights already loaded: a `System` of these parts, for callers that hold them (the
    held-in check during training, benchmarks, tests); `retriever` is needed for rag modes, `corpus` for icl."""
    system = System(Mode.parse(mode), tokenizer, model, module, None, retriever, corpus, calibration, k)
    return system.answer(questions, completion=completion, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         progress=progress)  # fmt: skip


def _load(ws, module: str | None, model: str):
    """(model, tokenizer, manifest): the module's weights on its base, or the bare base `model` (manifest None)."""
    if module:
        return load_module(ws, module)
    from imprint.models import load_base

    base = load_base(model)
    return base.model, base.tokenizer, None


def _retriever(ws, collection: str, retrieval, opened: dict | None):
    """The collection's retrieval index (None without documents), opened once per collection in `opened`."""
    from imprint.retrieval import Retriever

    if opened is not None and collection in opened:
        return opened[collection]
    found = Retriever.open(ws, retrieval, collection) if ws.documents(collection=collection) else None
    if opened is not None:
        opened[collection] = found
    return found
