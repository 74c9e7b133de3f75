"""`imprint eval`: answer held-out questions with each system and score them on the same items.

Systems are `base` (the bare model, closed book) and any number of modules (`name` or `name@version`). The
base model is scored first, then each module is attached to a freshly loaded base, so no adapter can leak
into the base score (or be silently missing from a module score: the manifest of each module is recorded).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from imprint.answer import answer_questions
from imprint.errors import ImprintError
from imprint.evaluate.metrics import exact_match, token_f1
from imprint.models import DEFAULT_MODEL, load_base
from imprint.progress import Bar


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    answers: tuple[str, ...]
    split: str = "learn"


def load_eval_set(path: str | Path) -> list[EvalItem]:
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
            raw = json.loads(line)
            answers = tuple(raw["answers"])
            items.append(
                EvalItem(str(raw.get("id", f"{path.stem}-{n}")), raw["question"], answers, raw.get("split", "learn"))
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ImprintError(f"{path}:{n}: each line must be JSON with 'question' and 'answers' ({exc})") from None
    if not items:
        raise ImprintError(f"eval set {path} holds no questions")
    return items


def score_system(name: str, model, tokenizer, items: list[EvalItem], mode: str) -> dict:
    with Bar(f"eval {name}", unit="questions") as bar:
        answers = answer_questions(
            model,
            tokenizer,
            [i.question for i in items],
            mode=mode,
            module=None if mode == "base" else name,
            progress=lambda done, total: bar.update(done, total),
        )
    rows = []
    for item, ans in zip(items, answers, strict=True):
        rows.append(
            {
                "id": item.id,
                "question": item.question,
                "gold": list(item.answers),
                "answer": ans.answer,
                "confidence": ans.confidence,
                "em": exact_match(ans.answer, list(item.answers)),
                "f1": token_f1(ans.answer, list(item.answers)),
                "latency_ms": ans.latency_ms,
            }
        )
    scored = [r for r in rows if r["gold"]]
    latencies = sorted(r["latency_ms"] for r in rows)
    return {
        "system": name,
        "mode": mode,
        "n": len(scored),
        "exact_match": round(statistics.fmean(r["em"] for r in scored), 4) if scored else None,
        "token_f1": round(statistics.fmean(r["f1"] for r in scored), 4) if scored else None,
        "latency_ms_p50": latencies[len(latencies) // 2],
        "rows": rows,
    }


def evaluate(ws, eval_path: str | Path, modules: list[str], model: str = DEFAULT_MODEL, include_base: bool = True):
    """Score `base` and each module on the same questions; returns the scorecard dict."""
    from imprint.pipeline import load_module, module_entry

    items = load_eval_set(eval_path)
    systems = []
    if include_base:
        base_name = model
        if modules:  # compare against the base the modules were trained on
            base_name = module_entry(ws, modules[0]).base_model
        base = load_base(base_name)
        systems.append(score_system("base", base.model, base.tokenizer, items, "base"))
        del base
    for spec in modules:
        module_model, tokenizer, manifest = load_module(ws, spec)
        result = score_system(f"{manifest['name']}@{manifest['version']}", module_model, tokenizer, items, "module")
        result["module"] = {k: manifest[k] for k in ("name", "version", "method", "base_model", "corpus_version")}
        result["train"] = {k: manifest["metrics"].get(k) for k in ("wall_s", "tokens", "tokens_per_s")}
        result["module_bytes"] = manifest.get("module_bytes")
        systems.append(result)
    return {"eval_set": str(eval_path), "n_questions": len(items), "systems": systems}
