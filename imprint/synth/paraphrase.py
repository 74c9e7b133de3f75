"""The `paraphrase` strategy: every chunk rewritten by the generator in several styles.

Why: a model trained on one phrasing of a fact memorises the phrasing; restatements in different styles teach
the fact itself (Rephrasing the Web, Maini et al. 2024: encyclopedia-like, plain and question-answer styles
each help, and mixing them helps most). The styles are the prompts of `templates/paraphrase.yaml` (a user's
`synth.templates=DIR` may add more); each round samples every (chunk, style) once more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imprint.synth.prompting import load_templates
from imprint.synth.records import SynthRecord
from imprint.synth.units import GenerationConfig, Unit, complete_sentences, make_unit, passage, titled


@dataclass(frozen=True)
class ParaphraseConfig(GenerationConfig):
    styles: str = field(
        default="", metadata={"help": "comma-separated styles (prompts of paraphrase.yaml); empty: all of them"}
    )


class ParaphraseStrategy:
    name = "paraphrase"
    config_class = ParaphraseConfig

    def __init__(self, config: ParaphraseConfig | None = None):
        self.config = config or ParaphraseConfig()
        self.templates = load_templates("paraphrase", self.config.templates)
        chosen = [s.strip() for s in self.config.styles.split(",") if s.strip()] or list(self.templates.prompts)
        self.styles = [self.templates[s] for s in chosen]

    def units(self, document, chunks, round: int) -> list[Unit]:
        return [
            make_unit(
                style,
                document.id,
                [c.id],
                round,
                {"title": document.title, "style": style.name},
                text=passage(c.text),
                title=document.title,
            )
            for c in chunks
            for style in self.styles
        ]

    def parse(self, unit: Unit, completion: str, truncated: bool):
        text = complete_sentences(completion, truncated)
        if not text:
            return [], []
        record = SynthRecord.make(
            self.name,
            unit.source_chunk_ids,
            "text",
            text=titled(unit.data["title"], text),
            meta={"style": unit.data["style"]},
        )
        return [record], []
