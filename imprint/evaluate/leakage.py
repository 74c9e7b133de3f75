"""Leakage check: prove no eval question (or question-answer pair) is in the data the evaluated modules trained on.

A module scored on questions it was trained on measures memorisation, not learning. Before any answering, every
eval item is compared with every synthetic record of every dataset listed in the evaluated modules' manifests
(and a user replay corpus, when one was mixed in), after SQuAD normalisation (case, punctuation, articles):

- `question_verbatim`: the eval question appears inside a training question, answer or text;
- `question_near_duplicate`: a training question shares at least `threshold` of the eval question's word n-grams
  (n = 3, or the question's length when shorter), i.e. a light rewording of the same question;
- `answer_sentence`: an accepted answer of at least `min_answer_words` words (a sentence, not a name or a number,
  which the corpus itself must contain) appears inside a training question-answer pair's answer next to a
  near-duplicate question.

Short answers ("27 days", a name) are in the training data by design: the corpus states them. What must not be
there is the eval question itself.

Completion probes of kind `memorise` are exempt: they are beginnings of the corpus's own sentences by design
(they measure recall of the text as written), so every training set that holds the corpus contains them. They are
counted in the report (`exempt_items`); other probes (`paraphrase`, `hard`: the fact reworded) are checked like
questions, since finding their wording in the training data would mean the eval set leaked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from imprint.errors import ImprintError, NotFoundError
from imprint.evaluate.evalset import EvalItem
from imprint.evaluate.metrics import normalize
from imprint.synth.records import SynthRecord, read_records


@dataclass(frozen=True)
class Leak:
    item_id: str
    kind: str
    dataset: str
    record_id: str
    overlap: float
    training_text: str


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    n = max(1, min(n, len(words)))
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def ngram_containment(question: str, other: str, n: int = 3) -> float:
    """Fraction of `question`'s word n-grams (after normalisation) that also occur in `other`."""
    words = normalize(question).split()
    if not words:
        return 0.0
    n = min(n, len(words))
    mine = _ngrams(words, n)
    theirs = _ngrams(normalize(other).split(), n)
    return len(mine & theirs) / len(mine)


VERBATIM_PROBES = ("memorise",)  # probe kinds that quote the corpus on purpose


def exempt(item: EvalItem) -> bool:
    """A probe that is corpus text by design: comparing it with training data that holds the corpus means nothing."""
    return item.completion and item.probe in VERBATIM_PROBES


def find_leaks(
    items: list[EvalItem],
    records: dict[str, list[SynthRecord]],
    threshold: float = 0.8,
    min_answer_words: int = 5,
) -> list[Leak]:
    """Every leak of `items` into `records` ({dataset name: records}), at most one per item, record and kind."""
    leaks: list[Leak] = []
    for dataset, recs in records.items():
        prepared = []
        for r in recs:
            words = normalize(r.question).split()
            grams = {n: _ngrams(words, n) for n in (1, 2, 3)} if words else {}
            shown = (r.question + " -> " + r.answer) if r.kind == "qa" else r.text
            everything = f" {normalize(' '.join((r.question, r.answer, r.text)))} "  # padded: whole words only
            prepared.append((r, grams, normalize(r.answer), everything, shown[:300]))
        for item in items:
            question_words = normalize(item.question).split()
            if not question_words or exempt(item):
                continue
            question = f" {' '.join(question_words)} "
            n = min(3, len(question_words))
            mine = _ngrams(question_words, n)
            long_answers = [normalize(a) for a in item.answers if len(normalize(a).split()) >= min_answer_words]
            for record, grams, record_answer, everything, shown in prepared:
                if question in everything:
                    leaks.append(Leak(item.id, "question_verbatim", dataset, record.id, 1.0, shown))
                    continue
                if not grams:
                    continue
                overlap = len(mine & grams[n]) / len(mine)
                if overlap >= threshold:
                    leaks.append(Leak(item.id, "question_near_duplicate", dataset, record.id, overlap, shown))
                    if any(f" {a} " in f" {record_answer} " for a in long_answers):
                        leaks.append(Leak(item.id, "answer_sentence", dataset, record.id, overlap, shown))
    return leaks


def lineage(ws, manifest: dict) -> list[dict]:
    """`manifest` and the manifests of the versions its weights descend from (parent, grandparent, ...): an update
    starts from its parent's weights, so what the parent trained on is in the child too."""
    chain = [manifest]
    while (parent := chain[-1].get("parent")) is not None:
        label = f"{chain[-1]['name']}@{chain[-1]['version']}"
        try:
            entry = ws.get_module(chain[-1]["name"], int(parent))
        except NotFoundError:
            raise ImprintError(
                f"module {label} descends from version {parent}, which is not in this workspace: the data its "
                "weights learned cannot be checked for leakage"
            ) from None
        if any(m["version"] == entry.version for m in chain):  # a corrupt lineage must not loop forever
            raise ImprintError(f"module {label}'s lineage loops back to version {entry.version}")
        chain.append(entry.manifest)
    return chain


def training_records(ws, manifests: list[dict]) -> dict[str, list[SynthRecord]]:
    """The synthetic records each module's weights learned, by dataset (deduplicated across modules): its own
    datasets and replay corpus, and those of every version in its lineage (an update keeps its parent's weights)."""
    from imprint.train.replay import corpus_replay

    out: dict[str, list[SynthRecord]] = {}
    for manifest in (m for top in manifests for m in lineage(ws, top)):
        for name in manifest.get("datasets", []):
            if name in out:
                continue
            try:
                out[name] = read_records(Path(ws.get_dataset(name).path))
            except NotFoundError:
                raise ImprintError(
                    f"module {manifest['name']}@{manifest['version']} trained on dataset {name!r}, which is gone: "
                    "the data its weights learned cannot be checked for leakage"
                ) from None
        replay_corpus = manifest.get("config", {}).get("train", {}).get("replay_corpus")
        replay = manifest.get("config", {}).get("train", {}).get("replay", 0)
        if replay and replay_corpus and Path(replay_corpus).exists() and f"replay:{replay_corpus}" not in out:
            out[f"replay:{replay_corpus}"] = corpus_replay(replay_corpus)
    return out


def leakage_report(items: list[EvalItem], records: dict[str, list[SynthRecord]], threshold: float = 0.8) -> dict:
    """The scorecard's `leakage` block: what was checked, and every leak found (`ok` is False if any)."""
    leaks = find_leaks(items, records, threshold)
    exempted = [i.id for i in items if exempt(i)]
    return {
        "ok": not leaks,
        "checked_items": len(items) - len(exempted),
        "exempt_items": len(exempted),
        "exempt_reason": "memorise probes quote the corpus's own sentences by design" if exempted else "",
        "checked_records": sum(len(r) for r in records.values()),
        "datasets": sorted(records),
        "near_duplicate_threshold": threshold,
        "leaked_items": sorted({leak.item_id for leak in leaks}),
        "leaks": [asdict(leak) for leak in leaks[:200]],
    }


def describe(report: dict) -> str:
    first = report["leaks"][0]
    return (
        f"{len(report['leaked_items'])} eval question(s) leaked into the training data "
        f"(e.g. {first['item_id']}: {first['kind']} in {first['dataset']} record {first['record_id']}: "
        f"{json.dumps(first['training_text'][:120])})"
    )
