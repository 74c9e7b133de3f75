"""The `raw` strategy: the chunks themselves, once each. The baseline every other strategy must beat."""

from __future__ import annotations

from imprint.synth.records import SynthRecord


class RawStrategy:
    name = "raw"

    def __init__(self, config=None):
        self.config = config

    def synthesize(self, documents, chunks) -> list[SynthRecord]:
        titles = {d.id: d.title for d in documents}
        return [
            SynthRecord.make("raw", [c.id], "text", text=f"{titles.get(c.doc_id, '')}\n\n{c.text}".strip())
            for c in chunks
        ]
