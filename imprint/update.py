"""Modules that follow a changing corpus: `imprint update`, lineage, rollback and diff.

After `imprint add` (new or changed documents) or `imprint remove`, `update_module` trains a module's next
version *from the previous one*: its weights are the starting point, and the training set is the synthetic data
of the added and changed documents, plus a replay of unchanged documents' records (so what v1 knew stays) and
general replay (against forgetting), in the proportions of `UpdateConfig`. `from_scratch=True` retrains from the
base model on the current corpus instead: the exact reference an update is compared against.

Records of removed documents, and of old versions of changed ones, are never in a new version's training set:
the set is synthesised from the current chunks only, and every record's source chunk ids are checked against
them before training. An update starts from weights that learned the removed text, so it also unlearns
(`update.forget`): the previous version's records of removed documents, and its questions whose old answer a
changed document no longer holds, form the dataset's forget set (`forget.jsonl`), trained towards the base
model's own next-token predictions and never towards their text. That is approximate; `--from-scratch` is the
exact path for a deletion (no weight ever saw the text).

Each version records its parent version, corpus version, collection, datasets, method, the documents it trained
on and its held-in figure (an update's: recall of its new records, against its parent; see
`evaluate/heldin.py`); `imprint rollback name@N` makes an older version current (what a bare `name`
resolves to, in the CLI and the server), and `diff_answers` lists the questions two versions answer differently.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

from imprint.errors import ImprintError
from imprint.synth.records import SynthRecord
from imprint.workspace import trained_documents


@dataclass(frozen=True)
class UpdateConfig:
    unchanged: float = field(
        default=1.0,
        metadata={"help": "records of unchanged documents replayed per record of an added or changed document"},
    )
    min_records: int = field(
        default=64,
        metadata={"help": "corpus records per update at least (filled from unchanged documents, e.g. after a remove)"},
    )
    general: float = field(
        default=0.1, metadata={"help": "fraction of general replay (train.replay) unless train.replay is set"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the unchanged-document sample"})
    warmup: float = field(
        default=0.2,
        metadata={
            "help": "warm-up fraction of an update's steps (unless train.warmup is set): a fresh optimizer's first "
            "full-rate step knocks trained weights off what they knew"
        },
    )
    state_changes: bool = field(
        default=True,
        metadata={
            "help": "add a record per changed sentence of a changed document: 'As of <date>, <new> (previously: <old>)'"
        },
    )
    forget: bool = field(
        default=True,
        metadata={
            "help": "unlearn what left the corpus: the previous version's records of removed documents, and its "
            "questions about changed ones whose answer the new text no longer holds, are trained towards the base "
            "model's own predictions (its top 32 next tokens), never towards their text"
        },
    )

    def __post_init__(self):
        if self.unchanged < 0 or self.min_records < 0:
            raise ValueError("update.unchanged and update.min_records must be >= 0")
        if not 0 <= self.general < 1 or not 0 <= self.warmup < 1:
            raise ValueError(f"update.general and update.warmup must be in [0, 1), got {self.general}, {self.warmup}")


@dataclass(frozen=True)
class Changes:
    """How a collection's current documents differ from those a module version trained on (doc ids)."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, " + (
            f"{len(self.unchanged)} unchanged documents"
        )


def module_documents(ws, manifest: dict) -> dict[str, int]:
    """{doc_id: version} a module version trained on: recorded in its manifest, else read from its datasets'
    records (modules trained before lineage was recorded)."""
    if manifest.get("documents") is not None:
        return {d: int(v) for d, v in manifest["documents"].items()}
    from imprint.synth.records import read_records

    chunk_ids = []
    for name in manifest.get("datasets", []):
        chunk_ids += [c for r in read_records(Path(ws.get_dataset(name).path)) for c in r.source_chunk_ids]
    return trained_documents(chunk_ids)


def corpus_changes(ws, manifest: dict) -> Changes:
    """What changed in the module's collection since `manifest`'s version was trained."""
    before = module_documents(ws, manifest)
    now = {d.id: d.version for d in ws.documents(collection=manifest.get("collection", "default"))}
    return Changes(
        added=tuple(sorted(set(now) - set(before))),
        changed=tuple(sorted(d for d in now if d in before and now[d] != before[d])),
        removed=tuple(sorted(set(before) - set(now))),
        unchanged=tuple(sorted(d for d in now if before.get(d) == now[d])),
    )


def _strategy_of(ws, manifest: dict):
    """The parent's synthesis strategy and settings (from its first dataset), rebuilt for the current corpus."""
    from imprint import registry
    from imprint.pipeline import resolve_synth_config
    from imprint.synth.units import is_generative

    strategy, settings = registry.DEFAULT_STRATEGY, {}
    for name in manifest.get("datasets", [])[:1]:
        try:
            entry = ws.get_dataset(name)
        except ImprintError:
            break  # the dataset is gone: the default strategy
        strategy = entry.manifest.get("strategy", registry.DEFAULT_STRATEGY)
        settings = entry.manifest.get("config", {})

    if is_generative(registry.strategy(strategy)):
        raise ImprintError(
            f"module {manifest['name']}@{manifest['version']} was trained on {strategy} data (a generator writes it); "
            "update re-synthesises with rules, prose or raw only for now: make a dataset (`imprint synth`) and "
            "`imprint train`"
        )
    cls, config = resolve_synth_config(strategy, {"synth": settings} if settings else None)
    return strategy, cls(config) if config is not None else cls()


def update_module(ws, spec: str, overrides: dict | None = None, from_scratch: bool = False) -> dict:
    """Train the next version of module `spec` (`name`: its current version; `name@N`: that one) on the current
    documents of its collection; returns the new version's manifest."""
    from imprint import pipeline
    from imprint.config import build, check_sections

    parent = ws.module(spec)
    manifest, method = parent.manifest, parent.method
    overrides = dict(overrides or {})
    check_sections(overrides, {"train", "update", method})
    if method in overrides and not from_scratch:
        raise ImprintError(
            f"an update starts from {parent.name}@{parent.version}'s weights and keeps its {method} settings: "
            f"drop the {method}.* settings, or pass --from-scratch"
        )
    config = build(UpdateConfig, "update", overrides.pop("update", {}))
    pipeline.resolve_train_configs(method, overrides)  # a bad train.* key or value fails before anything else
    ws.check_name("module", parent.name, parent.collection)
    changes = corpus_changes(ws, manifest)
    if not changes.any and not from_scratch:
        raise ImprintError(
            f"nothing changed in collection {parent.collection!r} since {parent.name}@{parent.version} "
            "(`imprint add` or `imprint remove` first, or --from-scratch to retrain anyway)"
        )
    strategy_name, strategy = _strategy_of(ws, manifest)
    documents, chunks = ws.documents(collection=parent.collection), ws.chunks(collection=parent.collection)
    if not chunks:
        raise ImprintError(f"collection {parent.collection!r} has no documents left: nothing to train on")
    records = strategy.synthesize(documents, chunks)
    current = {c.id: c.doc_id for c in chunks}
    stale = [r for r in records if not r.source_chunk_ids or any(c not in current for c in r.source_chunk_ids)]
    if stale:  # never train a new version on removed or superseded text
        raise ImprintError(
            f"record {stale[0].id} is not made from current chunks ({', '.join(stale[0].source_chunk_ids)})"
        )
    fresh = fresh_chunks(ws, changes, module_documents(ws, manifest), chunks)
    new = [r for r in records if any(c in fresh for c in r.source_chunk_ids)]
    if config.state_changes and not from_scratch:
        new += change_records(ws, changes, module_documents(ws, manifest), chunks)
    forget = forget_records(ws, manifest, changes, records) if config.forget and not from_scratch else []
    kept = [r for r in records if not any(c in fresh for c in r.source_chunk_ids)]
    if from_scratch:
        picked = kept
    else:
        n = max(round(config.unchanged * len(new)), config.min_records - len(new))
        picked = random.Random(config.seed).sample(kept, min(max(n, 0), len(kept)))
    data = new + picked
    version = ws.next_module_version(parent.name)
    info = {
        "mode": "from-scratch" if from_scratch else "update",
        "previous": parent.version,
        "added": list(changes.added),
        "changed": list(changes.changed),
        "removed": list(changes.removed),
        "n_unchanged_documents": len(changes.unchanged),
        "n_fresh_chunks": len(fresh),
        "n_new_records": len(new),
        "n_unchanged_records": len(picked),
        "n_forget_records": len(forget),
        "n_retrain_records": len(records),  # what --from-scratch trains on: the update's cost read against it
        "share_of_retrain": round((len(data) + len(forget)) / max(len(records), 1), 2),
        "config": dataclasses.asdict(config),
    }
    settings = getattr(strategy, "config", None)  # kept with the dataset, so the next update synthesises alike
    settings = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else {}
    name = f"{parent.name}-v{version}"
    dataset = _write_dataset(ws, name, (strategy_name, settings), data, parent.collection, info, forget)
    warmup = {} if from_scratch else {"warmup": config.warmup}
    overrides["train"] = {"replay": config.general, **warmup, **overrides.get("train", {})}
    if from_scratch:  # the same method settings as the version it replaces, unless told otherwise
        overrides[method] = {**manifest.get("config", {}).get(method, {}), **overrides.get(method, {})}
    return pipeline.train_module(
        ws,
        [dataset],
        parent.name,
        method,
        parent.base_model,
        overrides,
        start_from=None if from_scratch else parent,
        extra={"update": info},
        verify_on=None if from_scratch else [r.id for r in new],  # held in: the new records, against the parent
    )


def fresh_chunks(ws, changes: Changes, before: dict[str, int], chunks) -> set[str]:
    """Ids of the current chunks whose text a module version trained on `before` has not seen: every chunk of an
    added document, and the chunks of a changed document whose text its old version lacks (an edit to one
    paragraph leaves the others' chunks, and their records, unchanged)."""
    added = set(changes.added)
    fresh = {c.id for c in chunks if c.doc_id in added}
    for doc_id in changes.changed:
        seen = {c.text for c in ws.version_chunks(doc_id, before[doc_id])}
        fresh |= {c.id for c in chunks if c.doc_id == doc_id and c.text not in seen}
    return fresh


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip().split()) >= 3]


def change_records(ws, changes: Changes, before: dict[str, int], chunks) -> list[SynthRecord]:
    """Text records that state what changed in each changed document: for every sentence of the new version that
    the old one lacks, paired with the old version's most similar sentence (the one it replaces), "As of <date>,
    <new sentence> (previously: <old sentence>)". Each is made from the new version's chunk holding the sentence,
    so it names only current chunks; the old statement appears only as what is no longer true."""
    out = []
    for doc_id in changes.changed:
        old, new = ws.get_document(doc_id, before[doc_id]), ws.get_document(doc_id)
        old_sentences, new_sentences = _sentences(old.text), _sentences(new.text)
        gone = [s for s in old_sentences if s not in new_sentences]
        mine = [c for c in chunks if c.doc_id == doc_id]
        for sentence in (s for s in new_sentences if s not in old_sentences):
            ratio, previous = max(((SequenceMatcher(None, sentence, g).ratio(), g) for g in gone), default=(0, ""))
            if ratio < 0.5 or not mine:
                continue  # a new statement, not a changed one: the strategy's records teach it
            source = next((c for c in mine if sentence in c.text), mine[0])
            text = f"As of {new.added_at[:10]}, {sentence} (previously: {previous})"  # the date the change was added
            meta = {"doc_id": doc_id, "from_version": old.version, "to_version": new.version}
            out.append(SynthRecord.make("change", [source.id], "text", text=text, meta=meta))
    return out


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def forget_records(ws, manifest: dict, changes: Changes, current: list[SynthRecord]) -> list[SynthRecord]:
    """What the previous version learned that the corpus no longer says, from its own datasets: every record made
    only from removed documents' chunks, and each question about a changed document whose answer its new text
    no longer contains and that no current record asks (a question the new text answers is re-taught instead).
    Training them towards the base model's predictions brings those answers back to the base's level."""
    from imprint.synth.records import read_records

    before = module_documents(ws, manifest)
    removed, changed = set(changes.removed), set(changes.changed)
    if not removed and not changed:
        return []
    old = {c.id: c.doc_id for d in removed | changed for c in ws.version_chunks(d, before[d])}
    new_text = {d: _words(ws.get_document(d).text) for d in changed}
    asked = {_words(r.question) for r in current if r.kind == "qa"}
    out, seen = [], set()
    for dataset in manifest.get("datasets", []):
        try:
            entry = ws.get_dataset(dataset)
        except ImprintError:
            continue  # a deleted dataset: nothing of it to unlearn
        for record in read_records(Path(entry.path)):
            docs = {old.get(c) for c in record.source_chunk_ids}
            if record.id in seen or not record.source_chunk_ids or None in docs:
                continue  # made (partly) from text that is still current, or already taken
            superseded = (  # a question about a changed document whose new text neither asks nor answers it
                record.kind == "qa"
                and _words(record.question) not in asked
                and not any(f" {_words(record.answer)} " in f" {new_text.get(d, '')} " for d in docs)
            )
            if docs <= removed or superseded:
                seen.add(record.id)
                out.append(record)
    return out


def _write_dataset(ws, name: str, strategy: tuple[str, dict], records, collection: str, info: dict, forget) -> str:
    from imprint import __version__
    from imprint.pipeline import now
    from imprint.synth.records import write_forget, write_records

    directory = ws.data_dir(name)
    ws.check_name("dataset", name, collection)  # never overwrite another collection's dataset
    manifest = {
        "name": name,
        "strategy": strategy[0],
        "config": strategy[1],
        "collection": collection,
        "corpus_version": ws.corpus_version(collection),
        "n_records": len(records),
        "by_kind": {k: sum(r.kind == k for r in records) for k in ("text", "qa")},
        "update": info,
        "created_at": now(),
        "imprint_version": __version__,
    }
    write_records(directory, records, manifest)
    write_forget(directory, forget)
    ws.register_dataset(name, str(directory), len(records), manifest["corpus_version"], manifest, collection)
    return name


def diff_answers(ws, spec_a: str, spec_b: str, questions: list[str], progress=None) -> dict:
    """Both versions' closed-book answers to `questions` (as `imprint ask --mode module` answers, without
    calibration or retrieval): {a, b, answers: [(question, answer_a, answer_b)], changed: [indices]}."""
    from imprint.methods.loading import load_module
    from imprint.system import Mode, System

    answers, labels = [], []
    for n, spec in enumerate((spec_a, spec_b)):
        model, tokenizer, manifest = load_module(ws, spec)
        system = System(Mode.MODULE, tokenizer, model, f"{manifest['name']}@{manifest['version']}")  # bare weights
        labels.append(system.module)
        done = (lambda d, t, n=n: progress(n * t + d, 2 * t)) if progress else None
        answers.append([a.answer for a in system.answer(questions, progress=done)])
        del system
    rows = list(zip(questions, *answers, strict=True))
    return {
        "a": labels[0],
        "b": labels[1],
        "answers": rows,
        "changed": [i for i, (_, a, b) in enumerate(rows) if a != b],
    }
