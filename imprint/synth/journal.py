"""Resumption: an append-only journal of finished generation units (`data/<dataset>/journal.jsonl`).

Each line holds one unit's key (a hash of the generator, prompt, template version, sampling settings and
round), where it came from, and the completion. A synthesis run asks the journal before it asks the
generator, and appends a batch as soon as it is generated (flushed and fsync'ed), so a run that is killed
loses at most the batch in flight. Records are not journalled: they are parsed and gated again from the
completions, so a resumed run writes exactly the records of an uninterrupted one (given the same
completions), never a duplicate. A torn last line from a kill is skipped. At the end of a run the journal is
compacted to the units the final dataset used; rerunning the same command is then free, and after the corpus
changes only the units of changed chunks are generated again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.torn = 0
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn += 1  # a write cut short by a kill: that unit is simply generated again
        self.loaded = len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def append(self, entries: list[dict]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            handle.flush()
            os.fsync(handle.fileno())
        for e in entries:
            self.entries[e["key"]] = e

    def compact(self, keep: set[str]) -> None:
        """Rewrite the journal with only the units in `keep` (atomically: a crash leaves the old one)."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(e, ensure_ascii=False) + "\n" for k, e in self.entries.items() if k in keep]
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(self.path)
        self.entries = {k: e for k, e in self.entries.items() if k in keep}
