"""What the generator strategies share: their settings, the unit of generation work, and small text helpers.

A generator strategy (`paraphrase`, `qa`, `entigraph`, `active-reading`) never calls a generator itself. It
plans `Unit`s (one prompt each, made from a template and some chunks) and parses each completion into records
and, for multi-step strategies, follow-up units (entities -> relations, study plan -> study notes). The engine
(`engine.py`) owns batching, the token budget, resumption and the quality gates, so a strategy reads as the
recipe it implements:

    class Strategy(Protocol):
        name: str
        config_class: type[GenerationConfig]
        def units(self, document, chunks, round: int) -> list[Unit]: ...
        def parse(self, unit: Unit, completion: str, truncated: bool) -> tuple[list[SynthRecord], list[Unit]]: ...
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from imprint.synth.prompting import Template
from imprint.synth.records import SynthRecord
from imprint.synth.rules import sentences_of


@dataclass(frozen=True)
class GenerationConfig:
    """Settings every generator strategy takes (section `synth`); strategies add their own fields."""

    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (0 = greedy)"})
    seed: int = field(default=0, metadata={"help": "seed of sampling and of every random choice of the strategy"})
    rounds: int = field(default=1, metadata={"help": "passes over the corpus when no --tokens budget is given"})
    max_rounds: int = field(
        default=50, metadata={"help": "with a budget: passes after which a document stops even if budget is left"}
    )
    templates: str = field(default="", metadata={"help": "folder of <strategy>.yaml files overriding the prompts"})

    def __post_init__(self):
        if self.temperature < 0 or self.rounds < 1 or self.max_rounds < 1:
            raise ValueError("temperature must be >= 0, rounds and max_rounds >= 1")


@dataclass(frozen=True)
class Unit:
    """One prompt to complete: the engine generates it once, journals it, and hands the completion back."""

    step: str  # the template id, e.g. "paraphrase.plain"
    doc_id: str
    source_chunk_ids: tuple[str, ...]
    prompt: str
    template_version: str
    max_tokens: int
    stop: tuple[str, ...]
    sample: int = 0  # the round: the same prompt sampled again in a later round is a different unit
    data: dict = field(default_factory=dict)  # what parse() needs back (title, style, entities, task...)


class Strategy(Protocol):
    name: str
    config_class: type

    def units(self, document, chunks: list, round: int) -> list[Unit]: ...

    def parse(self, unit: Unit, completion: str, truncated: bool) -> tuple[list[SynthRecord], list[Unit]]: ...


def is_generative(strategy_cls) -> bool:
    return hasattr(strategy_cls, "units") and hasattr(strategy_cls, "parse")


def make_unit(template: Template, doc_id: str, chunk_ids, sample: int, data: dict, **values) -> Unit:
    return Unit(
        template.id,
        doc_id,
        tuple(chunk_ids),
        template.render(**values),
        template.version,
        template.max_tokens,
        template.stop,
        sample,
        data,
    )


def passage(text: str) -> str:
    """A chunk as one plain paragraph: markdown and bare headings removed (a prompt's stop is a blank line)."""
    sentences = sentences_of(text)
    return " ".join(sentences) if sentences else " ".join(text.split())


def by_document(documents, chunks) -> list[tuple[object, list]]:
    """(document, its chunks in order) for every document that has chunks, in corpus order."""
    grouped = defaultdict(list)
    for c in chunks:
        grouped[c.doc_id].append(c)
    return [(d, sorted(grouped[d.id], key=lambda c: c.ord)) for d in documents if grouped.get(d.id)]


def titled(title: str, text: str) -> str:
    """A text record as trained: under its document's title, like the `raw` and `rules` records."""
    return f"{title}\n\n{text}".strip() if title else text.strip()


def one_line(text: str) -> str:
    return " ".join(text.split())


def complete_sentences(text: str, truncated: bool) -> str:
    """Drop a sentence cut off by the token limit: a half sentence would teach a half fact."""
    text = text.strip()
    if truncated and not re.search(r"[.!?]['\")]?$", text):
        last = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
        text = text[: last + 1] if last > 0 else ""
    return text
