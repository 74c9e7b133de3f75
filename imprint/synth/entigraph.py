"""The `entigraph` strategy: a document's salient entities, then text on how pairs and triples of them relate.

Synthetic Continued Pretraining (Yang et al. 2024) turns a small corpus into a large, diverse one by
walking the graph of its entities: the generator lists each document's entities, then writes, for pairs and
triples of them, how they relate, grounded in the passages that mention them. It lifted Llama 3 8B from 39.5%
to 56.2% closed-book on QuALITY. Two steps here:
1. `entigraph.entities` on the whole document; only entities that occur in the document are kept (a small
   model also lists words from the prompt's example). If fewer than two remain and `synth.rule_entities` is
   on, the proper names the rule-based strategy finds are added, and the records say so (`entities_from`);
2. `entigraph.pair` / `entigraph.triple` on the passages mentioning the entities, co-mentioned ones first;
   each round takes the next `pairs_per_round` pairs and `triples_per_round` triples.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from imprint.synth.prompting import load_templates
from imprint.synth.records import SynthRecord
from imprint.synth.rules import find_spans, mid_sentence_names, sentences_of
from imprint.synth.units import GenerationConfig, Unit, complete_sentences, make_unit, passage, titled


@dataclass(frozen=True)
class EntiGraphConfig(GenerationConfig):
    max_entities: int = field(default=12, metadata={"help": "entities kept per document"})
    pairs_per_round: int = field(default=10, metadata={"help": "entity pairs written about per document and round"})
    triples_per_round: int = field(default=3, metadata={"help": "entity triples written about per document and round"})
    rule_entities: bool = field(
        default=True, metadata={"help": "add the rule-found names when the generator lists fewer than 2 usable ones"}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_entities < 2 or self.pairs_per_round < 0 or self.triples_per_round < 0:
            raise ValueError("max_entities must be >= 2, pairs_per_round and triples_per_round >= 0")


def rule_names(chunks) -> list[str]:
    """Proper names in the chunks, most mentioned first (the rule-based strategy's name finder)."""
    sentences = [s for c in chunks for s in sentences_of(c.text)]
    known = mid_sentence_names(sentences)
    counts = Counter(sp.text(s) for s in sentences for sp in find_spans(s, known) if sp.kind == "name")
    return [name for name, _ in counts.most_common()]


def parse_entities(completion: str, document_text: str, limit: int) -> list[str]:
    """The listed entities that occur in the document, in listed order, without repeats."""
    lowered = document_text.lower()
    out: list[str] = []
    for item in re.split(r"[;\n]|,\s", completion):
        item = item.strip(" .:-*\"'")
        if 1 < len(item) <= 60 and item.lower() in lowered and item.lower() not in (e.lower() for e in out):
            out.append(item)
    return out[:limit]


class EntiGraphStrategy:
    name = "entigraph"
    config_class = EntiGraphConfig

    def __init__(self, config: EntiGraphConfig | None = None):
        self.config = config or EntiGraphConfig()
        self.templates = load_templates("entigraph", self.config.templates)
        self.entities: dict[str, tuple[list[str], str]] = {}  # doc id -> (entities, where they came from)
        self.chunks: dict[str, list] = {}
        self.titles: dict[str, str] = {}

    def units(self, document, chunks, round: int) -> list[Unit]:
        self.chunks[document.id], self.titles[document.id] = chunks, document.title
        if document.id not in self.entities:
            text = " ".join(passage(c.text) for c in chunks)
            return [make_unit(self.templates["entities"], document.id, [c.id for c in chunks], round, {}, text=text)]
        return self._relation_units(document.id, round)

    def parse(self, unit: Unit, completion: str, truncated: bool):
        if unit.step == self.templates["entities"].id:
            chunks = self.chunks[unit.doc_id]
            found = parse_entities(completion, "\n".join(c.text for c in chunks), self.config.max_entities)
            origin = "generator"
            if len(found) < 2 and self.config.rule_entities:
                origin = "generator+rules" if found else "rules"
                extra = [n for n in rule_names(chunks) if n.lower() not in {e.lower() for e in found}]
                found = (found + extra)[: self.config.max_entities]
            self.entities[unit.doc_id] = (found, origin)
            return [], self._relation_units(unit.doc_id, unit.sample)
        text = complete_sentences(completion, truncated)
        if not text:
            return [], []
        entities, origin = self.entities[unit.doc_id]
        meta = {"entities": unit.data["entities"], "entities_from": origin}
        record = SynthRecord.make(
            self.name, unit.source_chunk_ids, "text", text=titled(self.titles[unit.doc_id], text), meta=meta
        )
        return [record], []

    def _relation_units(self, doc_id: str, round: int) -> list[Unit]:
        entities, _ = self.entities[doc_id]
        chunks = self.chunks[doc_id]
        mentions = {e: [c for c in chunks if e.lower() in c.text.lower()] for e in entities}
        rng = random.Random(f"{self.config.seed}:{doc_id}")
        units = []
        for size, per_round, template in (
            (2, self.config.pairs_per_round, self.templates["pair"]),
            (3, self.config.triples_per_round, self.templates["triple"]),
        ):
            groups = list(itertools.combinations(entities, size))
            if not groups or not per_round:
                continue
            rng.shuffle(groups)
            # co-mentioned groups first: their relation is stated in one passage rather than inferred
            groups.sort(key=lambda g: -len(set.intersection(*(set(c.id for c in mentions[e]) for e in g))))
            start = (round * per_round) % len(groups)
            for group in (groups + groups)[start : start + min(per_round, len(groups))]:
                shared = [c for c in chunks if all(c in mentions[e] for e in group)]
                picked = shared[:2] or list({c.id: c for e in group for c in mentions[e][:1]}.values())
                picked = sorted(picked, key=lambda c: c.ord)
                values = dict(zip("abc", group, strict=False))
                units.append(
                    make_unit(
                        template,
                        doc_id,
                        [c.id for c in picked],
                        round,
                        {"entities": list(group)},
                        text=" ".join(passage(c.text) for c in picked),
                        **values,
                    )
                )
        return units
