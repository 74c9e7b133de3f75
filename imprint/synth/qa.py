"""The `qa` strategy (self-study): the generator quizzes each chunk and answers from the text.

Three kinds of question, one prompt each in `templates/qa.yaml`: `factual` (who, what, when, how many: short
answers), `why_how` (reasons and procedures, one-sentence answers) and `compare` (two passages of the same
document side by side, so facts get connected across chunks). Why: SEAL (Zweiger et al. 2025) and the
Cartridges self-study show that training on a model's own questions about a text teaches it to answer new
questions about it far better than training on the text. Each pair is trained with the loss on the answer,
in the prompt format `imprint ask` uses; its source chunks are the ones quizzed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from imprint.synth.prompting import load_templates
from imprint.synth.records import SynthRecord
from imprint.synth.units import GenerationConfig, Unit, make_unit, one_line, passage

_PAIR = re.compile(r"Question:\s*(?P<q>.+?)\s*\n\s*Answer:\s*(?P<a>.+?)\s*(?=\n\s*Question:|\Z)", re.S)
KINDS = ("factual", "why_how", "compare")


@dataclass(frozen=True)
class QAConfig(GenerationConfig):
    kinds: str = field(default="factual,why_how,compare", metadata={"help": f"question kinds: {', '.join(KINDS)}"})
    max_pairs: int = field(default=6, metadata={"help": "question-answer pairs kept from one completion"})

    def __post_init__(self):
        super().__post_init__()
        unknown = {k.strip() for k in self.kinds.split(",") if k.strip()} - set(KINDS)
        if unknown or not self.kinds.strip():
            raise ValueError(f"kinds must be a comma-separated subset of {', '.join(KINDS)}")
        if self.max_pairs < 1:
            raise ValueError("max_pairs must be >= 1")


def parse_pairs(completion: str, truncated: bool, limit: int) -> list[tuple[str, str]]:
    """Complete (question, answer) pairs of a completion that continues after 'Question:'."""
    pairs = [(one_line(m["q"]), one_line(m["a"])) for m in _PAIR.finditer("Question: " + completion.strip())]
    if truncated and pairs:
        pairs = pairs[:-1]  # the last answer may be cut by the token limit
    return [(q, a) for q, a in pairs if q.endswith("?") and a][:limit]


class QAStrategy:
    name = "qa"
    config_class = QAConfig

    def __init__(self, config: QAConfig | None = None):
        self.config = config or QAConfig()
        self.templates = load_templates("qa", self.config.templates)
        self.kinds = [k.strip() for k in self.config.kinds.split(",") if k.strip()]

    def units(self, document, chunks, round: int) -> list[Unit]:
        units = []
        for kind in ("factual", "why_how"):
            if kind in self.kinds:
                units += [
                    make_unit(self.templates[kind], document.id, [c.id], round, {"kind": kind}, text=passage(c.text))
                    for c in chunks
                ]
        if "compare" in self.kinds and len(chunks) > 1:
            # each round pairs every chunk with another one further along the document (wrapping around)
            step = 1 + round % (len(chunks) - 1)
            for i, a in enumerate(chunks):
                b = chunks[(i + step) % len(chunks)]
                if len(chunks) == 2 and i == 1:
                    break  # two chunks make one pair
                units.append(
                    make_unit(
                        self.templates["compare"],
                        document.id,
                        [a.id, b.id],
                        round,
                        {"kind": "compare"},
                        text_a=passage(a.text),
                        text_b=passage(b.text),
                    )
                )
        return units

    def parse(self, unit: Unit, completion: str, truncated: bool):
        records = [
            SynthRecord.make(
                self.name, unit.source_chunk_ids, "qa", question=q, answer=a, meta={"kind": unit.data["kind"]}
            )
            for q, a in parse_pairs(completion, truncated, self.config.max_pairs)
        ]
        return records, []
