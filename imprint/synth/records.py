"""Synthetic training records and their on-disk form (JSONL + manifest.json in `data/<dataset>/`).

A record is either free text (`kind="text"`, trained with loss on every token) or a question-answer pair
(`kind="qa"`, loss on the answer only). Each keeps the chunk ids it was made from, so any trained fact
traces back to its source text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SynthRecord:
    id: str
    strategy: str
    source_chunk_ids: tuple[str, ...]
    kind: str  # "text" | "qa"
    text: str = ""
    question: str = ""
    answer: str = ""
    generator: str = "none"
    meta: dict = field(default_factory=dict)

    @staticmethod
    def make(strategy: str, source_chunk_ids, kind: str, generator: str = "none", **content) -> SynthRecord:
        """Build a record whose id is a content hash: identical records collapse, reruns are idempotent."""
        key = json.dumps(
            [strategy, kind, content.get("text", ""), content.get("question", ""), content.get("answer", "")],
            ensure_ascii=False,
        )
        rid = "s" + hashlib.sha1(key.encode()).hexdigest()[:12]
        return SynthRecord(rid, strategy, tuple(source_chunk_ids), kind, generator=generator, **content)

    def to_json(self) -> str:
        return json.dumps({"schema_version": SCHEMA_VERSION, **asdict(self)}, ensure_ascii=False)

    @staticmethod
    def from_json(line: str) -> SynthRecord:
        raw = json.loads(line)
        raw.pop("schema_version", None)
        raw["source_chunk_ids"] = tuple(raw["source_chunk_ids"])
        return SynthRecord(**raw)


def _write_jsonl(path: Path, records: list[SynthRecord]) -> Path:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return path


def _read_jsonl(path: Path) -> list[SynthRecord]:
    with path.open(encoding="utf-8") as handle:
        return [SynthRecord.from_json(line) for line in handle if line.strip()]


def write_records(directory: Path, records: list[SynthRecord], manifest: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = _write_jsonl(directory / "records.jsonl", records)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_forget(directory: Path, records: list[SynthRecord]) -> None:
    """A dataset's forget set (`forget.jsonl`): records trained towards the base model's own predictions, never
    towards their text (`imprint update` unlearning what left the corpus)."""
    _write_jsonl(directory / "forget.jsonl", records)


def read_forget(directory: Path) -> list[SynthRecord]:
    path = directory / "forget.jsonl"
    return _read_jsonl(path) if path.exists() else []


def read_records(directory: Path) -> list[SynthRecord]:
    return _read_jsonl(directory / "records.jsonl")
