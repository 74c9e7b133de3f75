"""`imprint eval`: every system answers the same questions, scored on what it learned, forgot and cost.

Systems are (name, mode, module) triples: `base` (closed book), `icl` (whole corpus in the prompt), `rag`
(retrieved chunks), each module (closed book) and each `module+rag`. They are grouped by weights: the base model
is loaded once for base/icl/rag, then each module is attached to a freshly loaded base for module and
module+rag, so no adapter can leak into the base's scores or be silently missing from a module's (the manifest
of each module is recorded). Each system reads one collection, recorded beside its scores: a module's systems
their module's, the others the run's (`scope.py`).

- learned: exact match, token F1 and "answer contained" on open `learn` questions (completion probes continue
  their prompt as given, and are also reported per probe kind: `by_probe`), log-likelihood choice accuracy on
  multiple-choice ones, an optional LLM judge, abstention on unanswerable questions and calibration (ECE) of the
  confidence.
- forgot: a property of the weights. Self-retention (see `forgetting.py`) and any `retain` benchmark are scored
  once per weights, closed book; icl and rag leave the base weights untouched, so they share the base's
  retention (no forgetting by construction) and module+rag shares its module's.
- cost: training wall time and tokens, module bytes, answer latency p50/p95 and prompt tokens per answer.
- changes (only for a change set, `changes.py`): adopted / retired / retained per system, relative to the previous
  version when it is in the run, and an update's cost against a from-scratch retrain.

A leakage check runs before any answering and stops the run when an eval question is in the training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from imprint.answer import MODES, Mode
from imprint.errors import ImprintError
from imprint.evaluate.calibration import expected_calibration_error
from imprint.evaluate.changes import change_scorecard
from imprint.evaluate.choice import score_choice_items
from imprint.evaluate.evalset import EvalItem, load_eval_set, load_eval_sets
from imprint.evaluate.forgetting import compare_to_base, retention_samples, run_lm_eval, score_samples
from imprint.evaluate.leakage import describe, leakage_report, training_records
from imprint.evaluate.metrics import answer_contained, exact_match, mean, percentile, standard_error, token_f1
from imprint.evaluate.scope import module_collections, run_collection
from imprint.models import DEFAULT_MODEL, load_base
from imprint.progress import Bar
from imprint.system import System

__all__ = ["SystemSpec", "evaluate", "load_eval_set", "plan_systems"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SystemSpec:
    name: str
    mode: str
    module: str | None = None  # "name@version" for module and module+rag

    @property
    def weights(self) -> str:
        """Which weights answer: the base's, or a module's (systems with the same weights share retention)."""
        return self.module or "base"


def plan_systems(modules: list[str], modes: list[str] | tuple[str, ...] = MODES) -> list[SystemSpec]:
    """The systems of one run, base-weight systems first: base, icl, rag, then module, module+rag per module."""
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ImprintError(f"unknown system mode {', '.join(unknown)}: use {', '.join(MODES)}")
    specs = [SystemSpec(m, m) for m in ("base", "icl", "rag") if m in modes]
    for module in modules:
        if "module" in modes:
            specs.append(SystemSpec(module, "module", module))
        if "module+rag" in modes:
            specs.append(SystemSpec(f"{module}+rag", "module+rag", module))
    return specs


def _answer(system: System, items: list[EvalItem], label: str):
    """Answer as `imprint ask` would: with the system's retriever (evidence, support) and fitted calibration
    (confidence, abstention). Questions and completion probes are answered apart (two prompt formats) and returned
    in item order."""
    answers: dict[int, object] = {}
    for completion in (False, True):
        positions = [n for n, item in enumerate(items) if item.completion == completion]
        if positions:
            questions = [items[n].question for n in positions]
            with Bar(label, unit="probes" if completion else "questions") as bar:
                got = system.answer(questions, completion=completion, progress=bar.update)
            answers.update(zip(positions, got, strict=True))
    return [answers[n] for n in range(len(items))]


def _scores(answer: str, gold: list[str], answerable: bool) -> dict:
    if not answerable:
        return {"em": None, "f1": None, "contained": None}
    return {"em": exact_match(answer, gold), "f1": token_f1(answer, gold), "contained": answer_contained(answer, gold)}


def _open_rows(items: list[EvalItem], answers) -> list[dict]:
    """One row per question, scored on what the model wrote (`Answer.generated`). Where module+rag's conflict rule
    showed the top passage's quote instead (`overridden`), the quote is scored apart under `override`: a quote holds
    many answers, so mixing it in would credit the retriever with the model's score."""
    rows = []
    for item, ans in zip(items, answers, strict=True):
        gold = list(item.answers)
        override = None
        if ans.overridden:
            override = {"answer": ans.answer, **_scores(ans.answer, gold, item.answerable)}
        rows.append(
            {
                "id": item.id,
                "question": item.question,
                "split": item.split,
                "answerable": item.answerable,
                "gold": gold,
                **ans.record(),
                "answer": ans.generated,
                "override": override,
                **_scores(ans.generated, gold, item.answerable),
                "completion": item.completion,
                "probe": item.probe,
            }
        )
    return rows


def override_metrics(rows: list[dict]) -> dict | None:
    """module+rag's scores had the conflict rule's quote been taken as its answer where it overrode the model:
    labelled apart from the model's own scores, never mixed in. None for systems without the conflict rule."""
    if not any(r.get("conflict") for r in rows):
        return None
    answerable = [r for r in rows if r["answerable"]]

    def taken(r: dict, key: str):
        return r["override"][key] if r.get("override") else r[key]

    return {
        "n_overridden": sum(bool(r.get("overridden")) for r in answerable),
        "overridden": _r(mean([float(bool(r.get("overridden"))) for r in answerable])),
        "exact_match": _r(mean([taken(r, "em") for r in answerable])),
        "token_f1": _r(mean([taken(r, "f1") for r in answerable])),
        "answer_contained": _r(mean([taken(r, "contained") for r in answerable])),
    }


def _r(value, digits: int = 4):
    return None if value is None else round(value, digits)


def learned_metrics(rows: list[dict], choice_rows: list[dict]) -> dict:
    """Scores over one system's `learn` rows: open EM/F1, choice accuracy, abstention, ECE, judge."""
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    out = {
        "n": len(answerable),
        "exact_match": _r(mean([r["em"] for r in answerable])),
        "token_f1": _r(mean([r["f1"] for r in answerable])),
        "answer_contained": _r(mean([r.get("contained") for r in answerable])),
        "by_probe": by_probe(answerable),
        "n_choice": len(choice_rows),
        "choice_accuracy": _r(mean([r["correct"] for r in choice_rows])),
        "choice_accuracy_norm": _r(mean([r["correct_norm"] for r in choice_rows])),
        "n_unanswerable": len(unanswerable),
        "abstention_unanswerable": _r(mean([float(r["abstained"]) for r in unanswerable])),
        "abstention_answerable": _r(mean([float(r["abstained"]) for r in answerable])),
        "ece": None,
        "judge_accuracy": _r(mean([r["judge"] for r in answerable if r.get("judge") is not None])),
        # module+rag: share of answers where the module alone said what the retrieved passages do not
        "conflicts": _r(mean([float(r["conflict"]["flagged"]) for r in rows if r.get("conflict")])),
        # module+rag: the scores with the conflict rule's passage quotes taken as answers (a labelled behaviour)
        "with_override": override_metrics(rows),
    }
    if answerable:
        confidences, correct = [r["confidence"] for r in answerable], [r["em"] for r in answerable]
        out["ece"] = _r(expected_calibration_error(confidences, correct))
    return out


def by_probe(rows: list[dict]) -> dict:
    """EM, F1 and answer contained per completion-probe kind (memorise, paraphrase, hard...): recall of the text
    as written and knowledge of the fact beyond its wording are different things, never averaged together."""
    kinds = sorted({r["probe"] or "completion" for r in rows if r.get("completion")})
    out = {}
    for kind in kinds:
        mine = [r for r in rows if r.get("completion") and (r["probe"] or "completion") == kind]
        out[kind] = {
            "n": len(mine),
            "exact_match": _r(mean([r["em"] for r in mine])),
            "token_f1": _r(mean([r["f1"] for r in mine])),
            "answer_contained": _r(mean([r["contained"] for r in mine])),
        }
    return out


def cost_metrics(rows: list[dict], manifest: dict | None) -> dict:
    latencies = [r["latency_ms"] for r in rows]
    metrics = (manifest or {}).get("metrics", {})
    return {
        "train_wall_s": metrics.get("wall_s"),
        "train_tokens": metrics.get("tokens"),
        "module_bytes": (manifest or {}).get("module_bytes"),
        "latency_ms_p50": _r(percentile(latencies, 50), 1),
        "latency_ms_p95": _r(percentile(latencies, 95), 1),
        "prompt_tokens_mean": _r(mean([r["prompt_tokens"] for r in rows if r["prompt_tokens"] is not None]), 1),
    }


BENCHMARK_METRICS = {"exact_match": "em", "token_f1": "f1", "choice_accuracy": "correct",
                     "choice_accuracy_norm": "correct_norm"}  # fmt: skip


def _benchmarks(system: System, items: list[EvalItem]) -> tuple[dict, dict]:
    """Retention benchmarks (split: retain), closed book with no retriever or abstention, per source file: each
    metric with its standard error (`<metric>_se`), and the per-item scores behind it (for paired deltas)."""
    out, per_item = {}, {}
    for source in sorted({i.source for i in items}):
        mine = [i for i in items if i.source == source]
        open_items = [i for i in mine if not i.is_choice]
        choice_items = [i for i in mine if i.is_choice]
        rows: list[dict] = []
        if open_items:
            rows += _open_rows(open_items, _answer(system, open_items, f"retain {source}"))
        if choice_items:
            with Bar(f"retain {source}", unit="questions") as bar:
                rows += score_choice_items(system.model, system.tokenizer, choice_items, progress=bar.update)
        result: dict = {"n": len(mine)}
        per_item[source] = {}
        for metric, column in BENCHMARK_METRICS.items():
            values = [float(r[column]) for r in rows if r.get(column) is not None]
            if values:
                per_item[source][metric] = values
                result[metric] = _r(mean(values))
                result[f"{metric}_se"] = _r(standard_error(values))
        out[source] = result
    return out, per_item


def _with_deltas(benchmarks: dict, per_item: dict, base: dict, base_items: dict) -> dict:
    """Each metric's change from the base, with the standard error of the paired differences (same items)."""
    for source, result in benchmarks.items():
        for key in BENCHMARK_METRICS:
            if result.get(key) is not None and base.get(source, {}).get(key) is not None:
                result[f"{key}_delta"] = round(result[key] - base[source][key], 4)
                mine, theirs = per_item[source][key], base_items[source][key]
                if len(mine) == len(theirs):
                    result[f"{key}_delta_se"] = _r(standard_error([a - b for a, b in zip(mine, theirs, strict=True)]))
    return benchmarks


@dataclass(frozen=True)
class EvalOptions:
    modes: tuple[str, ...] = MODES
    retain_limit: int | None = None  # items sampled from each retention file (None: all)
    retention_samples: int = 32  # base-model samples for self-retention
    retention_tokens: int = 64
    lm_eval_tasks: tuple[str, ...] = ()
    lm_eval_limit: int | None = None
    lm_eval_include: str | None = None  # folder of the user's own lm-eval task YAMLs
    allow_leakage: bool = False


def score_system(system: System, items: list[EvalItem], label: str, judge=None) -> dict:
    """Answer and score one system's `learn` items (`label`: its name in progress bars); returns its rows and
    learned metrics."""
    open_items = [i for i in items if not i.is_choice]
    choice_items = [i for i in items if i.is_choice]
    rows: list[dict] = []
    if open_items:
        rows = _open_rows(open_items, _answer(system, open_items, f"eval {label}"))
        if judge is not None:
            graded = [r for r in rows if r["answerable"]]
            verdicts = judge.grade([(r["question"], r["gold"], r["answer"]) for r in graded])
            for row, verdict in zip(graded, verdicts, strict=True):
                row["judge"] = verdict
    choice_rows: list[dict] = []
    if choice_items:
        with Bar(f"choices {label}", unit="questions") as bar:
            choice_rows = score_choice_items(system.model, system.tokenizer, choice_items, prompt=system.choice_prompt,
                                             progress=bar.update)  # fmt: skip
    return {"rows": rows, "choice_rows": choice_rows, "learned": learned_metrics(rows, choice_rows)}


def _forgot(model, tokenizer, weights: str, retain: list[EvalItem], base_ref: dict, options: EvalOptions):
    """Retention of one set of weights: self-samples against the base, benchmarks, lm-eval tasks."""
    scored = score_samples(model, base_ref["samples"])
    if weights == "base":
        base_ref["scored"] = scored
    bare = System(Mode.BASE, tokenizer, model) if weights == "base" else System(Mode.MODULE, tokenizer, model, weights)
    benchmarks, per_item = _benchmarks(bare, retain) if retain else ({}, {})  # closed book: no retriever
    if weights == "base":
        base_ref["benchmarks"], base_ref["benchmark_items"] = benchmarks, per_item
    out = {
        "self": compare_to_base(scored, base_ref["scored"]),
        "benchmarks": _with_deltas(benchmarks, per_item, base_ref["benchmarks"], base_ref["benchmark_items"]),
    }
    if options.lm_eval_tasks:
        out["lm_eval"] = _lm_eval(weights, base_ref, options)
    return out


def _lm_eval(weights: str, base_ref: dict, options: EvalOptions) -> dict:
    from imprint.models import resolve_model_dir

    base_dir = resolve_model_dir(base_ref["name"])
    if base_dir is None:
        return {"skipped": f"base model {base_ref['name']} has no model directory for lm-evaluation-harness"}
    manifest = base_ref["manifests"].get(weights)
    if manifest is not None and manifest["method"] != "lora":
        return {"skipped": f"lm-evaluation-harness loads PEFT adapters; a {manifest['method']} module is not one"}
    adapter = str(base_ref["module_dirs"][weights]) if manifest is not None else None
    tasks = list(options.lm_eval_tasks)
    return run_lm_eval(str(base_dir), adapter, tasks, options.lm_eval_limit, options.lm_eval_include)


def evaluate(
    ws,
    eval_paths,
    modules: list[str],
    model: str = DEFAULT_MODEL,
    options: EvalOptions | None = None,
    judge=None,
    collection: str | None = None,
) -> dict:
    """Score every system on the same questions; returns the scorecard dict (see the module docstring). Module
    systems read their module's collection, the others `collection` (see `scope.py`)."""
    from imprint.methods.loading import load_module

    options = options or EvalOptions()
    owned = module_collections(ws, modules)
    run_on = run_collection(ws, owned, collection)  # modules of several collections fail before any loading
    paths = [eval_paths] if isinstance(eval_paths, str | Path) else list(eval_paths)
    items = load_eval_sets(paths, options.retain_limit)
    learn = [i for i in items if i.split == "learn"]
    retain = [i for i in items if i.split == "retain"]
    manifests, module_dirs = {}, {}
    for spec in modules:
        entry = ws.module(spec)
        label = f"{entry.name}@{entry.version}"
        manifests[label], module_dirs[label] = entry.manifest, Path(entry.path)
    bases = sorted({m["base_model"] for m in manifests.values()})
    if len(bases) > 1:
        raise ImprintError(f"modules were trained on different base models ({', '.join(bases)}): eval them apart")
    base_name = bases[0] if bases else model

    leakage = leakage_report(items, training_records(ws, list(manifests.values())))
    if not leakage["ok"] and not options.allow_leakage:
        raise ImprintError(f"{describe(leakage)}; fix the eval set, or pass --allow-leakage to score it flagged")

    specs = plan_systems(list(manifests), options.modes)
    read = {s.name: owned[s.module] if s.module else run_on for s in specs}  # the collection each system reads
    skipped = {}
    for s in specs:
        mode = Mode.parse(s.mode)
        if (mode.retrieves or mode.in_context) and not ws.documents(collection=read[s.name]):
            skipped[s.name] = f"collection {read[s.name]!r} has no documents to retrieve or put in context"
    base_ref: dict = {"name": base_name, "manifests": manifests, "module_dirs": module_dirs}
    systems, retrievers = [], {}  # each collection's index opened once for the run
    for weights in ["base", *manifests]:
        group = [s for s in specs if s.weights == weights and s.name not in skipped]
        if weights == "base":
            base = load_base(base_name)
            model_, tokenizer, manifest = base.model, base.tokenizer, None
            base_ref["samples"] = retention_samples(base, options.retention_samples, options.retention_tokens)
        else:
            model_, tokenizer, manifest = load_module(ws, weights)
        forgot = _forgot(model_, tokenizer, weights, retain, base_ref, options)
        for spec in group:
            try:
                system = System.open(ws, spec.mode, spec.module, collection=read[spec.name],
                                     loaded=(model_, tokenizer, manifest), retrievers=retrievers)  # fmt: skip
                result = score_system(system, learn, spec.name, judge)
            except ImprintError as exc:  # e.g. icl: the corpus does not fit the context window
                skipped[spec.name] = str(exc)
                continue
            systems.append(
                {
                    "system": spec.name,
                    "mode": spec.mode,
                    "module": spec.module,
                    "weights": weights,
                    "collection": read[spec.name],
                    **result["learned"],
                    "forgot": forgot,
                    "calibration": _calibration_summary(system.calibration, paths),
                    "cost": cost_metrics(result["rows"], manifest),
                    "rows": result["rows"],
                    "choice_rows": result["choice_rows"],
                }
            )
        del model_
    changes = change_scorecard(learn, systems, manifests)  # None unless the items form a change set
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "eval_sets": [str(p) for p in paths],
        "eval_set": ", ".join(str(p) for p in paths),
        "base_model": base_name,
        "collection": run_on,  # what base, icl and rag read; each system's own is in its `collection`
        "n_questions": len(learn),
        "n_retain": len(retain),
        "leakage": leakage,
        "retention": {
            "samples": len(base_ref["samples"]),
            "tokens": sum(len(s["sample_ids"]) for s in base_ref["samples"]),
            "note": "base model's own temperature-1 samples on held-out general prompts; "
            "nll_delta estimates KL(base || system) per token",
        },
        "modules": {label: _module_summary(m) for label, m in manifests.items()},
        "skipped": skipped,
        "systems": systems,
        "changes": changes,
    }


def _calibration_summary(calibration, eval_paths: list) -> dict:
    """Whether the system's confidence/abstention was fitted, and on what: fitted on these very questions, its
    ECE here is optimistic (the cross-validated figures of the fit, `ece_cv`, are the honest ones)."""
    report = dict(calibration.report)
    fitted_on = {str(Path(p).resolve()) for p in report.get("eval_sets", [])}
    report["fit_on_these_questions"] = bool(fitted_on & {str(Path(p).resolve()) for p in eval_paths})
    return report


def _module_summary(manifest: dict) -> dict:
    keys = ("name", "version", "method", "base_model", "collection", "corpus_version", "datasets", "n_records",
            "module_bytes")  # fmt: skip
    return {**{k: manifest.get(k) for k in keys}, "metrics": manifest.get("metrics", {})}
