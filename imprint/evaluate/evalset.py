"""Eval sets: held-out questions as JSONL, one item per line, for what a system learned and what it forgot.

One format for every set: `{"question", "answers": [...], "choices"?: [...], "doc_ids"?: [...],
"split"?: "learn" | "retain", "answerable"?: bool, "id"?}`. `learn` items ask about the corpus (did the system
learn it?); `retain` items are general knowledge the base model had (did it forget?), e.g. the NQ-open and MMLU
samples in the shared retention folder, which are read by path in exactly this format. An item with `choices`
is scored by log-likelihood choice (its `answers` name the right choice); one without, by exact match and F1.
`answerable: false` marks a question the corpus cannot answer: the right behaviour is to abstain.

A completion probe has `"prompt"` instead of `"question"` (and optionally `"probe"`: its kind, e.g. `memorise`,
`paraphrase`, `hard`): the model continues the prompt as given, with no `Question:/Answer:` wrapper, and is right
when its continuation produces an accepted answer. The prompt is kept in `question` with `completion` set.

A change set (questions about a corpus edition, scored by `changes.py`) marks each item with `"change"`: `added`
or `changed` (the fact is new, `answers` hold its new value), `removed` (its document is gone: `answerable:
false`, nothing to answer) or `unchanged`; `changed` and `removed` items list the value that is no longer true
in `"old_answers"`.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path

from imprint.errors import ImprintError

SPLITS = ("learn", "retain")
CHANGES = ("added", "changed", "removed", "unchanged")


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    answers: tuple[str, ...]
    split: str = "learn"
    choices: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()
    answerable: bool = True
    source: str = ""  # the file (stem) the item came from: retention benchmarks are reported per file
    completion: bool = False  # `question` is a prompt to continue as given (a completion probe)
    probe: str = ""  # a completion probe's kind (memorise, paraphrase, hard...), reported apart
    change: str = ""  # in a change set: added, changed, removed or unchanged (see the module docstring)
    old_answers: tuple[str, ...] = ()  # changed and removed items: the answer that is no longer true

    @property
    def is_choice(self) -> bool:
        return bool(self.choices)

    @property
    def gold_choice(self) -> int:
        """Index of the right choice (the first accepted answer found among the choices)."""
        for answer in self.answers:
            if answer in self.choices:
                return self.choices.index(answer)
        raise ValueError(f"item {self.id}: no accepted answer is one of its choices")


def _item(raw: dict, path: Path, n: int) -> EvalItem:
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    completion = "prompt" in raw and "question" not in raw
    question, answers = raw["prompt"] if completion else raw["question"], raw["answers"]
    if not isinstance(question, str) or not question.strip():
        raise TypeError(f"'{'prompt' if completion else 'question'}' must be a non-empty string")
    probe = raw.get("probe", "")
    if not isinstance(probe, str):
        raise TypeError("'probe' must be a string")
    if isinstance(answers, str) or not all(isinstance(a, str) for a in answers):
        raise TypeError("'answers' must be a list of strings")
    split = raw.get("split", "learn")
    if split not in SPLITS:
        raise TypeError(f"'split' must be one of {', '.join(SPLITS)}, not {split!r}")
    choices = tuple(raw.get("choices") or ())
    answerable = bool(raw.get("answerable", True))
    if answerable and not answers:
        raise TypeError('an answerable item needs at least one accepted answer (or set "answerable": false)')
    item = EvalItem(
        id=str(raw.get("id", f"{path.stem}-{n}")),
        question=question,
        answers=tuple(answers),
        split=split,
        choices=choices,
        doc_ids=tuple(raw.get("doc_ids") or ()),
        answerable=answerable,
        source=path.stem,
        completion=completion,
        probe=probe if completion else "",
    )
    change, old_answers = raw.get("change", ""), raw.get("old_answers") or []
    if change and change not in CHANGES:
        raise TypeError(f"'change' must be one of {', '.join(CHANGES)}, not {change!r}")
    if isinstance(old_answers, str) or not all(isinstance(a, str) and a for a in old_answers):
        raise TypeError("'old_answers' must be a list of non-empty strings")
    if change in ("changed", "removed") and not old_answers:
        raise TypeError(f"a {change} item needs 'old_answers' (the value that is no longer true)")
    if change == "removed" and answerable:
        raise TypeError('a removed item has nothing left to answer: set "answerable": false')
    item = dataclasses.replace(item, change=change, old_answers=tuple(old_answers))
    if completion and choices:
        raise TypeError("a completion probe ('prompt') cannot have 'choices'")
    if choices:
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise TypeError("'choices' must list at least two non-empty strings")
        item.gold_choice  # noqa: B018 - raises when no accepted answer is a choice
    return item


def load_eval_set(path: str | Path) -> list[EvalItem]:
    """Read one JSONL eval set; a bad line is a one-line error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ImprintError(f"eval set {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ImprintError(f"eval set {path} is not UTF-8 text: expected JSONL, one question per line") from None
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(_item(json.loads(line), path, n))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ImprintError(
                f"{path}:{n}: each line must be JSON with 'question' (or 'prompt') and 'answers' ({exc})"
            ) from None
    if not items:
        raise ImprintError(f"eval set {path} holds no questions")
    return items


def sample_items(items: list[EvalItem], limit: int, seed: int = 0) -> list[EvalItem]:
    """A seeded random sample of `limit` items, kept in file order (the same items on every run)."""
    if limit >= len(items):
        return items
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [item for i, item in enumerate(items) if i in keep]


def load_eval_sets(paths: list[str | Path], retain_limit: int | None = None) -> list[EvalItem]:
    """Several eval sets as one list; ids must be unique across them. `retain_limit` samples each retention file."""
    items: list[EvalItem] = []
    for path in paths:
        loaded = load_eval_set(path)
        if retain_limit is not None and all(i.split == "retain" for i in loaded):
            loaded = sample_items(loaded, retain_limit)
        items.extend(loaded)
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            raise ImprintError(f"question id {item.id!r} appears twice (in {seen[item.id]} and {item.source})")
        seen[item.id] = item.source
    return items


def write_eval_set(path: Path, items: list[EvalItem]) -> Path:
    """Write items back in the JSONL format `load_eval_set` reads (used for generated sets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in items:
        raw = {"id": i.id, "prompt" if i.completion else "question": i.question, "answers": list(i.answers)}
        raw["split"] = i.split
        if i.probe:
            raw["probe"] = i.probe
        if i.choices:
            raw["choices"] = list(i.choices)
        if i.doc_ids:
            raw["doc_ids"] = list(i.doc_ids)
        if not i.answerable:
            raw["answerable"] = False
        if i.change:
            raw["change"] = i.change
        if i.old_answers:
            raw["old_answers"] = list(i.old_answers)
        lines.append(json.dumps(raw, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
