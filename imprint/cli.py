"""The `imprint` command line: one subcommand per stage, plus `learn` (ingest -> synth -> train) and `eval`.

Errors a user can fix print as one line on stderr with exit status 1 (2 for bad flags, from argparse); the
workspace is never left half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from imprint import flags, registry
from imprint.answer import MODES
from imprint.errors import ImprintError, ImprintWarning
from imprint.models import DEFAULT_MODEL
from imprint.progress import Bar

console = Console()
err = Console(stderr=True)


def _workspace(args):
    from imprint.workspace import Workspace, default_root

    return Workspace.open(Path(args.workspace) if args.workspace else default_root())


def _overrides(args) -> dict:
    from imprint.config import parse_overrides

    return parse_overrides(getattr(args, "set", None), getattr(args, "config", None))


def cmd_add(args) -> None:
    from imprint import pipeline

    report = pipeline.add(_workspace(args), args.paths, model=args.model, collection=args.collection)
    for status in ("added", "updated", "restored", "unchanged"):
        for uri in getattr(report, status):
            console.print(f"{status:>9}  {uri}")
    for skipped in report.skipped:
        err.print(f"[dim]  skipped  {skipped}[/dim]")


def cmd_remove(args) -> None:
    ws = _workspace(args)
    # a doc id as listed by `imprint docs`, else a path (resolved as at ingest, even if the file is gone)
    targets = [t if re.fullmatch(r"d[0-9a-f]{10}", t) else str(Path(t).resolve()) for t in args.documents]
    with ws.transaction():  # all or nothing: an unknown id leaves every document in place
        removed = [ws.remove_document(t, args.collection) for t in targets]
    for doc in removed:
        console.print(f"  removed  {doc.id}  {doc.uri}")
    for collection in sorted({doc.collection for doc in removed}):
        console.print(
            f"collection {collection}: corpus version {ws.corpus_version(collection)}: `imprint update MODULE "
            "--from-scratch` retrains a module without the removed text"
        )


def cmd_docs(args) -> None:
    ws = _workspace(args)
    if args.collection and not ws.collections().get(args.collection):
        names = ", ".join(ws.collections()) or "none yet: run `imprint add PATH --collection NAME`"
        raise ImprintError(f"collection {args.collection!r} has no documents (collections: {names})")
    table = Table("doc_id", "collection", "version", "title", "chunks", "tokens", "uri")
    chunks = ws.chunks(collection=args.collection)
    for d in ws.documents(collection=args.collection):
        mine = [c for c in chunks if c.doc_id == d.id]
        cells = [str(d.version), d.title, str(len(mine)), str(sum(c.n_tokens for c in mine)), d.uri]
        table.add_row(d.id, d.collection, *cells)
    console.print(table)


def cmd_synth(args) -> None:
    from imprint import pipeline
    from imprint.synth.records import read_records

    overrides = _generator_overrides(args, _overrides(args))
    pipeline.resolve_synth_config(args.strategy, overrides)  # a typo fails before the workspace or a model loads
    ws = _workspace(args)
    manifest = pipeline.synth(
        ws,
        args.strategy,
        args.name,
        overrides,
        generator=args.generator,
        tokens=args.tokens,
        model=args.model,
        collection=args.collection,
    )
    console.print(
        f"dataset [bold]{manifest['name']}[/bold]: {manifest['n_records']} records "
        f"({manifest['by_kind']['qa']} question-answer, {manifest['by_kind']['text']} text) "
        f"from {manifest['source_chunks']} chunks"
    )
    if "gates" in manifest:
        _print_gates(manifest)
    if args.show:
        import random

        records = read_records(ws.data_dir(manifest["name"]))
        for r in random.Random(0).sample(records, min(args.show, len(records))):
            body = f"Q: {r.question}\nA: {r.answer}" if r.kind == "qa" else r.text[:400]
            made = (
                f" by {r.generator} with {r.meta['template']} v{r.meta['template_version']}"
                if "template" in r.meta
                else ""
            )
            console.print(f"[dim]--- {r.id} {r.kind} from {', '.join(r.source_chunk_ids)}{made}[/dim]", highlight=False)
            console.print(body, markup=False, highlight=False)


def _generator_overrides(args, overrides: dict) -> dict:
    """--base-url and --generator-model are shorthands for generator.base_url and generator.model."""
    extra = {"base_url": getattr(args, "base_url", None), "model": getattr(args, "generator_model", None)}
    extra = {k: v for k, v in extra.items() if v}
    if extra:
        overrides = {**overrides, "generator": {**overrides.get("generator", {}), **extra}}
    return overrides


def _print_gates(manifest: dict) -> None:
    """The kept/dropped summary of a generator strategy: per template, candidates kept and dropped by reason."""
    gates, run = manifest["gates"], manifest["run"]
    budget = f" of a {manifest['tokens_budget']:,} budget" if manifest.get("tokens_budget") else ""
    console.print(
        f"generator {manifest['generator']}: {run['units']} units ({run.get('units_cached', 0)} from the journal), "
        f"{manifest['tokens_generated']:,} tokens generated{budget} in {run['wall_s']} s",
        highlight=False,
    )
    reasons = sorted({k for step in gates["by_step"].values() for k in step} - {"kept"})
    table = Table("template", "completions", "candidates", "kept", *reasons, title="quality gates")
    units = run.get("units_by_step", {})
    for step in sorted(set(units) | set(gates["by_step"])):
        counts = gates["by_step"].get(step, {})
        cells = [str(units.get(step, 0)), str(sum(counts.values())), str(counts.get("kept", 0))]
        table.add_row(step, *cells, *(str(counts.get(r, 0)) for r in reasons))
    cells = [str(run["units"]), str(gates["candidates"]), str(gates["kept"])]
    table.add_row("all", *cells, *(str(gates["dropped"].get(r, 0)) for r in reasons))
    console.print(table)
    if run.get("units_unparsed"):
        console.print(f"[dim]{run['units_unparsed']} completions held nothing usable (no record, no follow-up)[/dim]")


def cmd_train(args) -> None:
    from imprint import pipeline

    overrides = _overrides(args)
    pipeline.resolve_train_configs(args.method, overrides)  # a bad setting fails before anything else
    ws = _workspace(args)
    datasets = args.data or [d.name for d in ws.datasets()][-1:]
    if not datasets:
        raise ImprintError("no synthetic dataset yet: run `imprint synth` first")
    manifest = pipeline.train_module(ws, datasets, args.name, args.method, args.model, overrides, resume=args.resume)
    _print_module(manifest)


READ_REPLAY_FORGET = (
    ("n_reading_records", "open-book copies (train.read)"),
    ("n_replay_records", "general (train.replay)"),
    ("n_forget_records", "to unlearn"),
)


def _print_module(manifest: dict) -> None:
    from imprint.evaluate.heldin import describe

    m = manifest["metrics"]
    skipped = f", {len(m['skipped_steps'])} non-finite steps skipped" if m.get("skipped_steps") else ""
    console.print(
        f"module [bold]{manifest['name']}@{manifest['version']}[/bold] ({manifest['method']} on "
        f"{manifest['base_model']}): loss {m['loss_first']} -> {m['loss_last']}, {m['steps']} steps{skipped}, "
        f"{m['tokens']} tokens in {m['wall_s']} s ({m['tokens_per_s']} tokens/s), "
        f"{manifest['module_bytes'] / 1e6:.1f} MB"
    )
    parts = [f"{manifest['n_records']} corpus records"]
    parts += [f"{manifest[k]} {what}" for k, what in READ_REPLAY_FORGET if manifest.get(k)]
    console.print("trained on " + " + ".join(parts), highlight=False)
    if manifest.get("heldin"):
        console.print(describe(manifest["heldin"]), highlight=False)
    for reason in m.get("compile", {}).get("fallbacks", []):
        console.print(f"[dim]trained eagerly: {reason}[/dim]", highlight=False)


def cmd_learn(args) -> None:
    from imprint import pipeline

    overrides = _overrides(args)
    synth_sections = ("synth", "generator", "gates")
    synth_overrides = _generator_overrides(args, {k: v for k, v in overrides.items() if k in synth_sections})
    train_overrides = {k: v for k, v in overrides.items() if k not in synth_sections}
    pipeline.resolve_synth_config(args.strategy, synth_overrides)  # fail on a typo before any slow work
    pipeline.resolve_train_configs(args.method, train_overrides)
    ws = _workspace(args)
    dataset = f"{args.name}-{args.strategy}"
    ws.check_name("module", args.name, args.collection)  # another collection's module or data: refused, untouched
    ws.check_name("dataset", dataset, args.collection)
    report = pipeline.add(ws, args.paths, model=args.model, collection=args.collection)
    console.print(
        f"ingest: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged ({len(ws.chunks(collection=args.collection))} chunks in collection "
        f"{args.collection})"
    )
    data = pipeline.synth(
        ws,
        args.strategy,
        dataset,
        synth_overrides,
        generator=args.generator,
        tokens=args.tokens,
        model=args.model,
        collection=args.collection,
    )
    console.print(f"synth: {data['n_records']} records ({data['by_kind']['qa']} question-answer)")
    manifest = pipeline.train_module(
        ws, [data["name"]], args.name, args.method, args.model, train_overrides, resume=args.resume
    )
    _print_module(manifest)


def _retrieval(args):
    """Retrieval settings from `--set retrieval.store=qdrant` and the like."""
    from imprint.config import build, check_sections
    from imprint.retrieval import RetrievalConfig

    overrides = _overrides(args)
    check_sections(overrides, {"retrieval"})
    return build(RetrievalConfig, "retrieval", overrides.get("retrieval", {}))


def cmd_ask(args) -> None:
    from imprint.system import System

    if not args.question.strip():
        raise ImprintError("the question is empty: ask something, e.g. imprint ask 'Who is the CFO?'")
    mode = args.mode or ("module" if args.module else "rag")
    retrieval = _retrieval(args)
    system = System.open(_workspace(args), mode, args.module, model=args.model, collection=args.collection,
                         k=args.k, retrieval=retrieval)  # fmt: skip
    answer = system.answer([args.question])[0]
    if args.json:
        print(json.dumps(answer.record()))
        return
    style = "yellow" if answer.abstained else "bold"
    console.print(f"[{style}]{answer.answer}[/{style}]")
    support = {
        True: "supported: a retrieved passage about the question says it",
        False: "not supported: no retrieved passage about the question says it",
        None: "no corpus to check",
    }
    calibrated = bool(system.calibration and system.calibration.confidence)
    confidence = f"{answer.confidence:.2f}"
    if not calibrated:  # the answer tokens' mean probability, not a probability of being right
        confidence = f"~{confidence} (uncalibrated: imprint calibrate)"
    console.print(
        f"[dim]{mode}{' ' + answer.module if answer.module else ''} | confidence {confidence} | "
        f"{support[answer.supported]} | {answer.latency_ms:.0f} ms, {answer.prompt_tokens} prompt tokens[/dim]"
    )
    if answer.abstained and answer.guess:
        console.print(f"[dim]  the model's guess was: {answer.guess}[/dim]")
    if answer.overridden:
        console.print(
            f"[yellow]overridden by evidence: the model answered {answer.guess!r}, which is what the module alone "
            "answers and the retrieved passages do not say; shown instead is the top passage's quote[/yellow]"
        )
    elif answer.conflict and answer.conflict["flagged"]:
        console.print(
            f"[yellow]conflict: the module alone answers {answer.conflict['closed_book']!r}, which the retrieved "
            "passages do not say; with the passages it answered otherwise[/yellow]"
        )
    for n, ev in enumerate(answer.evidence, 1):
        console.print(f"[dim]  [{n}] {ev['title']} ({ev['chunk_id']}, score {ev['score']:.3f}): {ev['quote']}[/dim]")


def cmd_calibrate(args) -> None:
    from imprint.evaluate.calibration import calibrate, check_items
    from imprint.evaluate.evalset import load_eval_set
    from imprint.system import System

    retrieval = _retrieval(args)
    items = [i for path in args.questions for i in load_eval_set(path)]
    check_items(items)
    ws = _workspace(args)
    table = Table(
        "system",
        "questions",
        "unanswerable",
        "EM",
        "F1",
        "ECE raw",
        "ECE calibrated",
        "abstains on unanswerable",
        "abstains on answerable",
        title="calibration (5-fold cross-validated)",
    )
    for mode in args.mode or ["rag"]:
        # fitted on, stored for and applied to one collection: --collection, else the module's, else default
        system = System.open(ws, mode, args.module, model=args.model, collection=args.collection, k=args.k,
                             retrieval=retrieval)  # fmt: skip
        with Bar(f"calibrate {system.name}", unit="questions") as bar:
            cal = calibrate(system, items, args.questions, ws.root, args.f1, args.max_abstain, progress=bar.update)
        r = cal.report
        pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
        table.add_row(
            f"{system.name} ({system.collection})",
            str(r["n"]),
            str(r["n_unanswerable"]),
            f"{r['exact_match']:.3f}",
            f"{r['token_f1']:.3f}",
            f"{r['ece_raw']:.3f}",
            f"{r['ece_cv']:.3f}",
            pct(r["abstain_unanswerable_cv"]),
            pct(r["abstain_answerable_cv"]),
        )
    console.print(table)


def cmd_eval(args) -> None:
    import shlex

    from imprint.config import build, check_sections
    from imprint.evaluate.report import write_report
    from imprint.evaluate.report.terminal import print_scorecard
    from imprint.evaluate.run import EvalOptions, evaluate
    from imprint.evaluate.scope import module_collections, run_collection
    from imprint.synth.generators import GeneratorConfig

    overrides = _overrides(args)  # settings checked before any work: eval takes generator.* only
    check_sections(overrides, {"generator"})
    build(GeneratorConfig, "generator", overrides.get("generator", {}))
    modes = tuple(m.strip() for m in args.systems.split(",")) if args.systems else MODES
    if args.no_base:
        modes = tuple(m for m in modes if m != "base")
    options = EvalOptions(
        modes=modes,
        retain_limit=args.retain_limit,
        retention_samples=args.retention_samples,
        lm_eval_tasks=tuple(t for t in (args.lm_eval or "").split(",") if t),
        lm_eval_limit=args.lm_eval_limit,
        lm_eval_include=args.lm_eval_include,
        allow_leakage=args.allow_leakage,
    )
    judge = None
    if args.judge_url:
        from imprint.evaluate.judge import openai_judge

        judge = openai_judge(args.judge_url, args.judge_model)
    questions = list(args.questions)
    if not questions and not args.generate_questions:
        raise ImprintError("give eval sets (JSONL) or --generate-questions N")
    ws = _workspace(args)
    modules = args.module or []
    collection = run_collection(ws, module_collections(ws, modules), args.collection)  # see evaluate/scope.py
    if args.generate_questions:
        questions.append(_generated_questions(ws, args, collection))
    card = evaluate(ws, questions, modules, model=args.model, options=options, judge=judge, collection=args.collection)
    card["command"] = "imprint " + shlex.join(args.raw_argv)
    card_path, html_path = write_report(card, ws.root / "reports" / f"eval-{card_id()}")
    if args.json:
        keys = ("exact_match", "token_f1", "answer_contained", "n", "conflicts", "changes")
        print(json.dumps({s["system"]: {k: s.get(k) for k in keys} for s in card["systems"]}))
        return
    print_scorecard(card, console)
    console.print(f"[dim]scorecard: {card_path}\nreport:    {html_path}[/dim]")


def _generated_questions(ws, args, collection: str) -> str:
    """Write eval questions generated from `collection` (see imprint/evaluate/generate.py); returns the file."""
    from imprint.config import build, check_sections
    from imprint.evaluate.generate import generate_eval_items, write_generated
    from imprint.synth.generators import GeneratorConfig, make_generator

    overrides = _overrides(args)
    check_sections(overrides, {"generator"})
    values = dict(overrides.get("generator", {}))
    values.update({k: v for k, v in (("base_url", args.base_url), ("model", args.generator_model)) if v})
    generator = make_generator(args.generator, build(GeneratorConfig, "generator", values), default_model=args.model)
    items, rejected = generate_eval_items(ws, generator, args.generate_questions, collection=collection)
    path = write_generated(ws, items)
    dropped = ", ".join(f"{k} {v}" for k, v in rejected.items() if v) or "none"
    console.print(f"generated {len(items)} eval questions into {path} (dropped: {dropped})")
    return str(path)


def card_id() -> str:
    from datetime import datetime

    return datetime.now().strftime("%Y%m%d-%H%M%S")


def cmd_modules(args) -> None:
    ws = _workspace(args)
    current = ws.current_versions()
    rows = [
        {
            "module": f"{m.name}@{m.version}",
            "current": current.get(m.name) == m.version,
            "parent": None if m.parent_version is None else f"{m.name}@{m.parent_version}",
            "method": m.method,
            "base_model": m.base_model,
            "collection": m.collection,
            "corpus_version": m.corpus_version,
            "datasets": m.manifest.get("datasets", []),
            "heldin_f1": ((m.manifest.get("heldin") or {}).get("module") or {}).get("f1"),
            "created_at": m.created_at,
        }
        for m in ws.modules()
    ]
    if args.json:
        print(json.dumps(rows))
        return
    table = Table("module", "parent", "method", "collection", "corpus", "held-in F1", "datasets")
    table.caption = "* current: what a bare name resolves to (`imprint rollback NAME@N`); --json: base model, created"
    for r in rows:
        f1 = "-" if r["heldin_f1"] is None else f"{r['heldin_f1']:.2f}"
        module = r["module"] + (" *" if r["current"] else "")
        cells = [r["method"], r["collection"], r["corpus_version"], f1, ", ".join(r["datasets"])]
        table.add_row(module, r["parent"] or "-", *cells)
    console.print(table)


def cmd_update(args) -> None:
    from imprint.update import update_module

    ws = _workspace(args)
    manifest = update_module(ws, args.module, _overrides(args), from_scratch=args.from_scratch)
    info = manifest["update"]
    console.print(
        f"{info['mode']} from {manifest['name']}@{info['previous']}: {len(info['added'])} added, "
        f"{len(info['changed'])} changed, {len(info['removed'])} removed documents; its corpus records: "
        f"{info['n_new_records']} new + {info['n_unchanged_records']} of unchanged documents",
        soft_wrap=True,
    )  # the general and to-unlearn counts follow on _print_module's "trained on" line
    share = info.get("share_of_retrain")
    if info["mode"] == "update" and share is not None:
        console.print(
            f"corpus records trained: {share:.2f} of a from-scratch retrain's {info['n_retrain_records']}"
            + (
                " (this change touches most of the corpus: --from-scratch costs about the same and is exact)"
                if share >= 0.8
                else ""
            )
        )
    if info["removed"] and info["mode"] == "update":
        console.print(
            "[dim]removed documents are not in the training data; "
            + (
                "their facts were trained towards the base model's own predictions, which is approximate: "
                if info.get("n_forget_records")
                else "the previous weights may still hold their facts: "
            )
            + "--from-scratch retrains without them[/dim]"
        )
    _print_module(manifest)


def cmd_rollback(args) -> None:
    from imprint import refs

    try:
        ref = refs.parse(args.module)
    except refs.BadModuleRef as exc:
        raise ImprintError(str(exc)) from None
    if ref.version is None:
        raise ImprintError(f"rollback needs a version: {ref.name}@N (`imprint modules` lists them)")
    ws = _workspace(args)
    entry = ws.module(args.module)  # unknown or malformed versions fail here, before anything changes
    ws.set_current_module(entry.name, entry.version)
    console.print(f"module {entry.name}: current version is now {entry.name}@{entry.version}")


def cmd_diff(args) -> None:
    from imprint.evaluate.evalset import load_eval_set
    from imprint.update import diff_answers

    ws = _workspace(args)
    for spec in (args.a, args.b):
        ws.module(spec)  # an unknown module fails before any model loads
    items = load_eval_set(args.questions)
    with Bar("diff", unit="questions") as bar:
        found = diff_answers(ws, args.a, args.b, [i.question for i in items], lambda d, t: bar.update(d, t))
    if args.json:
        rows = [dict(zip(("question", "a", "b"), found["answers"][i], strict=True)) for i in found["changed"]]
        print(json.dumps({"a": found["a"], "b": found["b"], "n": len(items), "changed": rows}))
        return
    table = Table(
        "question", found["a"], found["b"], title=f"answers that changed: {len(found['changed'])} of {len(items)}"
    )
    for i in found["changed"]:
        table.add_row(*found["answers"][i])
    console.print(table)


def cmd_doctor(args) -> None:
    from imprint.doctor import print_report, report

    with Bar("doctor", unit="checks") as bar:
        found = report(compile_check=not args.no_compile_check, progress=lambda d, t, **i: bar.update(d, t, **i))
    if args.json:
        print(json.dumps(found, indent=2))
        return
    print_report(found, console)


def cmd_serve(args) -> None:
    import socket

    from imprint.config import build, check_sections
    from imprint.serve import ServeConfig, create_app, serve
    from imprint.workspace import default_root

    overrides = _overrides(args)
    check_sections(overrides, {"serve"})
    values = dict(overrides.get("serve", {}))
    if args.max_loaded_mb is not None:
        values["max_loaded_mb"] = args.max_loaded_mb
    if args.engine:
        values["engine"] = args.engine
    config = build(ServeConfig, "serve", values)
    with socket.socket() as probe:  # a taken port fails now, not after the model has loaded
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise ImprintError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; pick another port") from None
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.workspace) if args.workspace else default_root()
    app = create_app(root, model=args.model, keys=args.keys, config=config)
    tenants = "open to any client (no --keys)" if not args.keys else f"API keys from {args.keys}"
    where = f"http://{args.host}:{args.port}/v1"
    n = torch.get_num_threads()  # what --threads set, or torch's own choice
    threads = f"{n} CPU thread{'s' if n != 1 else ''}"
    err.print(f"serving {args.model} and the modules of {root} on {where}, {tenants}, {threads}", soft_wrap=True,
              markup=False)  # fmt: skip
    if config.engine == "vllm":
        err.print(app.state.service.engine.note, soft_wrap=True, markup=False)
    serve(app, args.host, args.port)


def cmd_export(args) -> None:
    from imprint.config import build, check_sections
    from imprint.export import ExportConfig, export_module

    overrides = _overrides(args)
    check_sections(overrides, {"export"})
    config = build(ExportConfig, "export", overrides.get("export", {}))
    report = export_module(_workspace(args), args.module, args.format, args.out, config)

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    what = {"peft": "a PEFT adapter", "vllm": "a vLLM adapter", "merged": f"a merged {report.get('dtype')} model",
            "gguf": f"a {report.get('gguf_type')} GGUF", "ollama": "an Ollama model"}[args.format]  # fmt: skip
    say(f"exported {report['module']} as {what} to {report['out']}")
    if report.get("writer"):
        say(f"GGUF written by {report['writer']}: {report.get('verified', 'not checked (export.verify=false)')}")
    if report.get("command"):
        how = "create the Ollama model" if args.format == "ollama" else "serve it with vLLM"
        say(f"{how}:\n  {report['command']}")
    if args.format == "merged":
        say(f"load it with transformers: AutoModelForCausalLM.from_pretrained({report['out']!r})")
    fmt = report["prompt_format"]
    stops = " or ".join(repr(s) for s in fmt["stop"])
    say(f"ask it in the format it was trained on: {fmt['prompt']!r}, greedy, cut at the first {stops}")


def build_parser() -> argparse.ArgumentParser:
    parser = flags.Parser(prog="imprint", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="workspace directory (default: $IMPRINT_HOME or ./.imprint)")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_flag(p):
        p.add_argument(
            "--model",
            default=os.environ.get("IMPRINT_MODEL", DEFAULT_MODEL),
            help=f"base model: {DEFAULT_MODEL} (embedded), tiny (tests), or a local HF directory",
        )

    def collection_flag(p, default="default", what="the collection to use"):
        p.add_argument("--collection", default=default, metavar="NAME", help=what)

    def config_flags(p):
        p.add_argument(
            "--set",
            action="append",
            metavar="SECTION.KEY=VALUE",
            help="override a setting, e.g. train.lr=5e-4 or lora.r=16 (repeatable)",
        )
        p.add_argument("--config", help="YAML file of {section: {key: value}} settings")

    def generator_flags(p):
        p.add_argument(
            "--generator",
            choices=["local", "openai", "none"],
            help="who writes paraphrase/qa/entigraph/active-reading data: local (the base model in process, the "
            "default), openai (any OpenAI-compatible endpoint; key from $IMPRINT_GENERATOR_API_KEY or "
            "$OPENAI_API_KEY), none (prose, rules and raw only)",
        )
        p.add_argument("--tokens", metavar="N", help="generation budget, e.g. 500k: spread over documents by size")
        p.add_argument("--base-url", help="openai generator endpoint, e.g. http://127.0.0.1:8000/v1")
        p.add_argument("--generator-model", help="openai: served model name; local: a model other than --model")

    p = sub.add_parser("add", help="ingest files or directories (.txt .md .html .pdf)")
    p.add_argument("paths", nargs="+")
    collection_flag(p, what="collection to add them to (default: default); a tenant owns collections")
    model_flag(p)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="remove documents (by path or doc id); their history is kept")
    p.add_argument("documents", nargs="+")
    collection_flag(p, None, "the collection they are in (paths: default when not given; ids: any)")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("docs", help="list documents")
    collection_flag(p, None, "list only this collection's documents (default: every collection)")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("synth", help="write a synthetic training set from the corpus")
    p.add_argument(
        "--strategy",
        default=registry.DEFAULT_STRATEGY,
        help="prose (default: spaCy parse of every clause, falls back to rules without spaCy), rules (regexes over "
        "names, dates and numbers) or raw (no generator); paraphrase, qa, entigraph or active-reading (a generator "
        "writes)",
    )
    p.add_argument("--name", help="dataset name (default: the strategy's name)")
    p.add_argument("--show", type=flags.whole, default=0, metavar="N", help="print N sample records")
    collection_flag(p, what="the collection whose documents to synthesise from (default: default)")
    generator_flags(p)
    model_flag(p)
    config_flags(p)
    p.set_defaults(func=cmd_synth)

    methods = sorted(registry.METHODS)
    method_help = f"how knowledge enters the model: {', '.join(methods)} (default lora)"
    p = sub.add_parser("train", help="train a module on synthetic datasets")
    p.add_argument("--data", action="append", help="dataset name (repeatable; default: the latest)")
    p.add_argument("--method", default="lora", choices=methods, help=method_help)
    p.add_argument("--name", default="default", help="module name")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    model_flag(p)
    config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("learn", help="ingest -> synth -> train in one go")
    p.add_argument("paths", nargs="+")
    p.add_argument("--name", default="default", help="module name")
    p.add_argument(
        "--strategy",
        default=registry.DEFAULT_STRATEGY,
        help="synthesis strategy: prose (default; with the train defaults of 3 epochs and 30%% distilled self-replay, "
        "measured on real prose, see README), rules, raw, ... (see `imprint synth --help`)",
    )
    p.add_argument("--method", default="lora", choices=methods, help=method_help)
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    collection_flag(p, what="add to this collection and train on its documents only (default: default)")
    generator_flags(p)
    model_flag(p)
    config_flags(p)
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("ask", help="answer a question, with confidence and evidence")
    p.add_argument("question")
    p.add_argument("--module", help="module name or name@version")
    p.add_argument(
        "--mode",
        choices=MODES,
        help="base, icl (whole corpus in context), rag, module, module+rag (default: module with --module, else rag)",
    )
    p.add_argument("-k", type=flags.whole, default=None, help="chunks to retrieve (default 4)")
    p.add_argument("--json", action="store_true", help="print {answer, confidence, evidence, mode, ...} as JSON")
    collection_flag(p, None, "retrieve from this collection (default: the module's own, else default)")
    model_flag(p)
    config_flags(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("calibrate", help="fit confidence and abstention on labelled questions (JSONL)")
    p.add_argument("questions", nargs="+", help="JSONL eval sets; items with answerable:false teach abstention")
    p.add_argument("--mode", action="append", choices=MODES, help="mode(s) to calibrate (repeatable; default rag)")
    p.add_argument("--module", help="module for module modes")
    p.add_argument("-k", type=flags.whole, default=None, help="chunks to retrieve (default 4)")
    p.add_argument(
        "--f1", type=flags.number, default=0.5, help="an answer counts as right at this token F1 (default 0.5)"
    )
    p.add_argument(
        "--max-abstain", type=flags.number, default=0.1, help="abstain on at most this share of answerable questions"
    )
    collection_flag(p, None, "fit on, and store for, this collection's answers (default: the module's, else default)")
    model_flag(p)
    config_flags(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("eval", help="score every system on held-out questions: learned vs forgot vs cost")
    p.add_argument("questions", nargs="*", help="JSONL eval sets (split learn: corpus questions; retain: general)")
    p.add_argument("--module", action="append", help="module to score (repeatable)")
    p.add_argument("--systems", help="comma list of base,icl,rag,module,module+rag (default: all)")
    p.add_argument("--no-base", action="store_true", help="do not score the base system (still the reference)")
    p.add_argument("--retain-limit", type=flags.whole, help="sample N items of each retention eval set (seeded)")
    p.add_argument("--retention-samples", type=flags.whole, default=32, help="base-model samples for self-retention")
    p.add_argument("--lm-eval", metavar="TASKS", help="comma list of lm-evaluation-harness tasks (if installed)")
    p.add_argument("--lm-eval-limit", type=flags.whole, help="items per lm-evaluation-harness task")
    p.add_argument("--lm-eval-include", metavar="DIR", help="folder of your own lm-evaluation-harness task YAMLs")
    p.add_argument("--judge-url", help="OpenAI-compatible base URL of an LLM judge (e.g. http://127.0.0.1:8000/v1)")
    p.add_argument("--judge-model", default="", help="model the judge endpoint serves (default: its only one)")
    p.add_argument("--allow-leakage", action="store_true", help="score even if eval questions are in training data")
    p.add_argument("--json", action="store_true", help="print {system: {exact_match, token_f1, n}}")
    p.add_argument(
        "--generate-questions", type=flags.whole, metavar="N", help="also ask N questions a generator writes"
    )
    p.add_argument("--generator", default="openai", help="generator for --generate-questions: openai or local")
    p.add_argument("--base-url", help="shorthand for --set generator.base_url=URL")
    p.add_argument("--generator-model", help="shorthand for --set generator.model=NAME")
    collection_flag(
        p,
        None,
        "what base, icl and rag read and questions are generated from (default: the modules' collection, "
        "else default); module systems always read their module's",
    )
    config_flags(p)
    model_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("doctor", help="what this machine offers and what imprint will use (attach to bug reports)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-compile-check", action="store_true", help="skip the compiled-vs-eager training check")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("modules", help="list module versions: current, parent, corpus version, held-in F1")
    p.add_argument("--json", action="store_true", help="print one object per version")
    p.set_defaults(func=cmd_modules)

    p = sub.add_parser("update", help="train a module's next version from its current one on what changed")
    p.add_argument("module", help="module name (its current version is the parent) or name@N")
    p.add_argument("--from-scratch", action="store_true", help="retrain from the base on the current corpus instead")
    config_flags(p)
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("rollback", help="make an older module version current (what a bare name resolves to)")
    p.add_argument("module", help="name@N")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("diff", help="answer questions with two module versions and list the answers that changed")
    p.add_argument("a", help="module name or name@N")
    p.add_argument("b", help="module name or name@N")
    p.add_argument("questions", help="JSONL with a 'question' per line (an eval set)")
    p.add_argument("--json", action="store_true", help="print {a, b, n, changed: [{question, a, b}]}")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("serve", help="serve the base model and every module over an OpenAI-compatible API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=flags.whole, default=8000)
    p.add_argument("--keys", help="tenants YAML: API keys -> owned collections and limits (default: open)")
    p.add_argument("--max-loaded-mb", type=flags.number, help="memory budget for loaded modules (LRU beyond it)")
    p.add_argument("--threads", type=flags.whole, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--engine", choices=["local", "vllm"], help="who decodes: imprint (default) or vLLM (LoRA only)")
    model_flag(p)
    config_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="write a module as a PEFT/vLLM adapter, a merged model, a GGUF or for Ollama")
    p.add_argument("module", help="module name or name@version")
    p.add_argument("--format", choices=["peft", "vllm", "merged", "gguf", "ollama"], default="peft",
                   help="peft/vllm: LoRA adapter; merged: HF model with the module folded in; gguf: that model for "
                   "llama.cpp; ollama: the GGUF and a Modelfile")  # fmt: skip
    p.add_argument("--out", required=True, help="new (or empty) directory to write")
    config_flags(p)
    p.set_defaults(func=cmd_export)
    return parser


def _one_line_warnings(show):
    """A `warnings.showwarning` that prints imprint's own warnings as one line (`imprint: warning: ...`) and
    passes others to `show`."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, ImprintWarning):
            err.print(f"imprint: warning: {message}", markup=False, highlight=False, soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.raw_argv = list(sys.argv[1:] if argv is None else argv)  # recorded beside measured numbers (eval)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warnings(previous)
    try:
        flags.check(args)  # numbers in range before any verb reads or stores anything
        args.func(args)
    except ImprintError as exc:
        err.print(f"imprint: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("imprint: interrupted", markup=False)
        return 130
    finally:
        warnings.showwarning = previous
    return 0


if __name__ == "__main__":
    sys.exit(main())
