"""Learned vs forgot for memory layers (sparse and dense updates) beside LoRA, full fine-tuning and a KV prefix, on the
same data in one run.

Ingests the first `--docs` documents (from `--docs-from`) of the bundled sample corpus or of a knowledge dev set
under ../shared/data/knowledge/ (`--set squad_dev`, `--set fictional_dev`), synthesises them once (`--strategy`:
`rules` on the sample, imprint's default strategy on the dev sets), and trains one module per `--systems` entry on
that same dataset with the default recipe (or `--epochs`): `lora`, `full`, `prefix`, `memory-dense` (every slot
moves, plain AdamW) and `memory-sparse` (only the top-t TF-IDF slots per step, Lin et al. 2025). Each is then
scored like `imprint eval` does: learned = held-in recall (the run's own training questions, from the manifest)
and the set's held-out questions about those documents; forgot = self-retention (top-1 agreement with the base,
ΔNLL on the base's own samples) and the NQ-open and MMLU retention sets under ../shared/data/retention/
(`--retain` items of each). It ends with forgetting ratios (each method vs LoRA) measured in the same run.

    python bench/memory_forgetting.py --docs 2 --epochs 2 --retain 40
    python bench/memory_forgetting.py --set squad_dev --docs 3 --epochs 6 --systems lora,full,prefix,memory-sparse

`--out` defaults to ~/.cache/imprint/bench/memory ($IMPRINT_CACHE); each stage is cached there (results.json),
so an interrupted run continues. `--model tiny` checks the plumbing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from imprint import pipeline
from imprint.errors import TrainingError
from imprint.evaluate.evalset import load_eval_set, write_eval_set
from imprint.evaluate.run import EvalOptions, evaluate
from imprint.models import DEFAULT_MODEL, cache_root
from imprint.registry import DEFAULT_STRATEGY, STRATEGIES
from imprint.train.compute import cpu_model
from imprint.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "imprint" / "data" / "sample"
KNOWLEDGE = ROOT.parent / "shared" / "data" / "knowledge"
RETENTION = ROOT.parent / "shared" / "data" / "retention"
SETS = {  # corpus folder, question file
    "sample": (SAMPLE / "corpus", SAMPLE / "eval.jsonl"),
    "squad_dev": (KNOWLEDGE / "squad_dev" / "corpus", KNOWLEDGE / "squad_dev" / "questions.jsonl"),
    "fictional_dev": (KNOWLEDGE / "fictional_dev" / "corpus", KNOWLEDGE / "fictional_dev" / "questions.jsonl"),
}
SYSTEMS = {
    "lora": ("lora", {}),
    "full": ("full", {}),
    "prefix": ("prefix", {}),
    "memory-dense": ("memory", {"update": "dense"}),
    "memory-sparse": ("memory", {"update": "sparse"}),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def select_docs(args) -> list[Path]:
    """Documents `--docs-from` .. `--docs-from + --docs` of the set, in name order."""
    corpus, questions = SETS[args.set]
    if not corpus.is_dir() or not questions.is_file():
        sys.exit(f"imprint: error: set {args.set} not found at {corpus} (expected ../shared/data/knowledge/)")
    docs = sorted(p for p in corpus.iterdir() if p.is_file() and not p.name.startswith("."))
    if args.set == "sample":
        docs = [p for p in docs if p.suffix == ".md"]
    docs = docs[args.docs_from : args.docs_from + args.docs]
    if not docs:
        sys.exit(f"imprint: error: no documents in {corpus} from index {args.docs_from}")
    return docs


def train_all(ws, data: str, args, done: dict, save) -> None:
    for system in args.systems:
        if system in done:
            continue
        method, settings = SYSTEMS[system]
        train = {"epochs": args.epochs, "seed": args.seed, "checkpoint_every": 0, "replay": args.replay,
                 "read": args.read}  # fmt: skip
        train.update({"verify_n": args.verify_n} if args.verify_n else {"verify": False})
        if system in args.lr:
            train["lr"] = args.lr[system]
        if method == "memory" and args.top_t:
            settings = {**settings, "top_t": args.top_t}
        log(f"train {system} ({method} {settings}, train {train})")
        try:
            manifest = pipeline.train_module(ws, [data], system, method, args.model, {"train": train, method: settings})
            registered = True
        except TrainingError as exc:  # failed the held-in check: recorded, not evaluated
            log(f"{system}: {exc}")
            manifest = json.loads((ws.root / "runs" / system / "failed" / "manifest.json").read_text())
            registered = False
        metrics = manifest["metrics"]
        done[system] = {
            "registered": registered,
            "heldin": manifest["heldin"],
            "train_tokens": metrics["tokens"],
            "train_s": metrics["wall_s"],
            "loss_first": metrics["loss_first"],
            "loss_last": metrics["loss_last"],
            "module_bytes": manifest["module_bytes"],
            "lr": manifest["config"]["train"]["lr"],
        }
        save()


def evaluate_all(ws, args, out: Path, results: dict, save) -> None:
    docs = set(results["docs"])
    learn = [i for i in load_eval_set(SETS[args.set][1]) if set(i.doc_ids) <= docs and i.answerable]
    paths = [write_eval_set(out / "learn.jsonl", learn)]
    paths += [RETENTION / "nq_open_dev_300.jsonl", RETENTION / "mmlu_285.jsonl"]
    modules = [s for s in args.systems if results["trained"].get(s, {}).get("registered")]
    log(f"eval {len(learn)} corpus questions, {args.retain} of each retention set, modules {', '.join(modules)}")
    t0 = time.perf_counter()
    # A synthetic question can equal a held-out one without the eval set ever being read (both are written from the
    # same sentence, as `prose` does on real passages): such items are scored, flagged, and left out of `clean_f1`.
    options = EvalOptions(
        modes=("base", "module"), retain_limit=args.retain, retention_samples=args.samples, allow_leakage=True
    )
    card = evaluate(ws, paths, modules, model=args.model, options=options)
    results["eval_s"] = round(time.perf_counter() - t0)
    results["learn_questions"] = len(learn)
    flagged = set(card["leakage"]["leaked_items"])
    results["flagged"] = sorted(flagged)
    learn_ids = {i.id for i in learn}

    def clean(rows: list[dict]) -> float | None:
        f1 = [r["f1"] for r in rows if r["id"] in learn_ids and r["id"] not in flagged and r["f1"] is not None]
        return round(sum(f1) / len(f1), 4) if f1 else None

    results["systems"] = {
        s["weights"]: {
            "f1": s["token_f1"],
            "clean_f1": clean(s["rows"]),
            "contained": s["answer_contained"],
            "top1": s["forgot"]["self"]["top1_agreement"],
            "nll_delta": s["forgot"]["self"]["nll_delta"],
            "benchmarks": s["forgot"]["benchmarks"],
        }
        for s in card["systems"]
    }
    save()


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _bench(scores: dict, name: str) -> dict:
    return next((v for k, v in scores["benchmarks"].items() if name in k), {})


def print_table(results: dict, args) -> None:
    print(f"\n{args.set}, {len(results['docs'])} documents, {args.strategy} synthesis; "
          f"{results.get('learn_questions')} held-out corpus questions; retention: {args.retain} NQ-open + "
          f"{args.retain} MMLU items, {args.samples} self-samples (eval {results.get('eval_s')} s)")  # fmt: skip
    head = f"{'system':<15}{'held-in F1':>11}{'dev F1':>8}{'clean':>7}{'NQ F1':>8}{'MMLU acc':>9}"
    print(head + f"{'top-1':>7}{'ΔNLL':>8}{'tokens':>8}{'train s':>9}{'MB':>7}")
    systems = results.get("systems", {})
    rows = [("base", None)] + [(s, results["trained"][s]) for s in args.systems if s in results["trained"]]
    for name, trained in rows:
        label = name if name == "base" else f"{name}@1"
        scores = systems.get(label)
        heldin = _f(((trained or {}).get("heldin") or {}).get("module", {}).get("f1"))
        if trained and not trained["registered"]:
            heldin += "*"
        nq, mmlu = (_bench(scores, "nq"), _bench(scores, "mmlu")) if scores else ({}, {})
        line = f"{name:<15}{heldin:>11}{_f(scores and scores['f1']):>8}{_f(scores and scores.get('clean_f1')):>7}"
        line += f"{_f(nq.get('token_f1')):>8}{_f(mmlu.get('choice_accuracy')):>9}"
        line += f"{_f(scores and scores['top1']):>7}{_f(scores and scores['nll_delta'], 4):>8}"
        if trained:
            line += f"{trained['train_tokens']:>8}{trained['train_s']:>9.0f}{trained['module_bytes'] / 2**20:>7.1f}"
        print(line)
    if results.get("flagged"):
        n = len(results["flagged"])
        print(f"clean: dev F1 without the {n} questions a synthetic record repeats (imprint's leakage check)")
    if any(not t["registered"] for t in results["trained"].values()):
        print("* failed imprint's held-in check (no better than the base): not registered, not evaluated")
    lora = systems.get("lora@1")
    for name in [s for s in SYSTEMS if s != "lora"]:
        mine = systems.get(f"{name}@1")
        if lora and mine and lora["nll_delta"]:
            print(f"ΔNLL {name} / lora: {mine['nll_delta'] / lora['nll_delta']:.3f}x; top-1 disagreement "
                  f"{name} / lora: {(1 - mine['top1']) / max(1e-9, 1 - lora['top1']):.3f}x")  # fmt: skip


def write_plot(path: Path, runs: list[dict], y_axis: str = "heldin") -> Path:
    """Learned (`y_axis` "heldin": F1 on the run's own training questions; "dev": F1 on the set's held-out
    questions) against forgot (next-token disagreement with the base on its own samples), one point per trained and
    evaluated system of every run given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"lora": "#059669", "memory-sparse": "#2563eb", "memory-dense": "#d97706", "full": "#dc2626",
               "prefix": "#7c3aed"}  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    sets = {run["settings"].get("set", "sample") for run in runs}
    placed: list[tuple[float, float]] = []
    for run in runs:
        for name, trained in run["trained"].items():
            scores = run.get("systems", {}).get(f"{name}@1")
            if not scores:
                continue
            heldin = (trained.get("heldin") or {}).get("module", {}).get("f1")
            learned = heldin if y_axis == "heldin" else scores.get("f1")
            if learned is None:  # trained without the held-in check, or no held-out questions
                continue
            x, y = 100 * (1 - scores["top1"]), 100 * learned
            ax.scatter([x], [y], s=70, color=colours.get(name, "#111827"), zorder=3)
            top_t = run["settings"].get("top_t") if name.startswith("memory") else None
            where = "" if len(sets) == 1 else f", {run['settings'].get('set', 'sample')}"
            replay = f", replay {run['settings']['replay']:g}" if run["settings"].get("replay") else ""
            label = f"{name}{f' top_t {top_t}' if top_t else ''}, {run['settings']['epochs']:g} ep{replay}{where}"
            crowded = any(abs(x - px) < 12 and abs(y - py) < 5 for px, py in placed)  # label below, not on top
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(7, -13 if crowded else 5), fontsize=9)
            placed.append((x, y))
    if len(sets) == 1:
        ax.set_title(next(iter(sets)), fontsize=10)
    ax.set_xlabel("forgot: next-token disagreement with the base on its own samples (%)")
    ax.set_ylabel(
        "learned: held-in F1 on training questions (%)"
        if y_axis == "heldin"
        else "learned: F1 on held-out questions of the corpus (%)"
    )
    ax.set_xlim(-2, 102)
    ax.set_ylim(-3, 103)
    ax.grid(True, alpha=0.3)
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "memory-forgetting"}):
        fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="sample", choices=sorted(SETS), help="corpus and questions (default sample)")
    parser.add_argument("--docs", type=int, default=2, help="N documents of the set, in name order")
    parser.add_argument("--docs-from", type=int, default=0, help="skip the set's first N documents")
    parser.add_argument(
        "--strategy", default="", help="synthesis strategy (default: rules on the sample, imprint's default otherwise)"
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: " + ",".join(SYSTEMS))
    parser.add_argument("--epochs", type=float, default=5.0, help="training epochs (the default recipe's)")
    parser.add_argument(
        "--replay",
        type=float,
        default=0.0,
        help="train.replay for every system (default 0: each method's forgetting on its own; imprint's default 0.3)",
    )
    parser.add_argument(
        "--read",
        type=float,
        default=0.0,
        help="train.read (open-book records) for every system (default 0: the corpus records only; imprint's 0.3)",
    )
    parser.add_argument("--top-t", type=int, default=0, help="memory.top_t for the memory systems (0: its default)")
    parser.add_argument("--lr", default="", help="per-system learning rates, e.g. memory-sparse=0.1,lora=1e-3")
    parser.add_argument("--retain", type=int, default=40, help="items sampled from each retention set")
    parser.add_argument("--samples", type=int, default=8, help="base-model samples for self-retention")
    parser.add_argument(
        "--verify-n", type=int, default=32, help="questions of the held-in check (0: none, for --model tiny)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default=str(cache_root() / "bench" / "memory"), help="stage cache")
    parser.add_argument(
        "--plot", default="", help="write a learned-vs-forgot SVG here, with this run's systems and --plot-with's"
    )
    parser.add_argument("--plot-with", default="", help="comma-separated --out folders of other runs to plot too")
    parser.add_argument(
        "--plot-y",
        default="heldin",
        choices=("heldin", "dev"),
        help="the plot's learned axis: held-in F1 (training questions) or F1 on the set's held-out questions",
    )
    args = parser.parse_args()
    args.systems = [s for s in args.systems.split(",") if s]
    args.lr = {k: float(v) for k, v in (p.split("=") for p in args.lr.split(",") if p)}
    args.strategy = args.strategy or ("rules" if args.set == "sample" else DEFAULT_STRATEGY)
    if args.strategy not in STRATEGIES:
        sys.exit(f"imprint: error: unknown strategy {args.strategy!r}: choose from {', '.join(sorted(STRATEGIES))}")
    if set(args.systems) - set(SYSTEMS):
        sys.exit(f"imprint: error: unknown system: choose from {', '.join(SYSTEMS)}")
    print("command: python " + " ".join(sys.argv))
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cpu_model()}, {cores} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    keys = ("docs", "epochs", "lr", "retain", "samples", "verify_n", "seed", "model")
    keys += ("top_t",) if args.top_t else ()  # earlier runs' caches stay valid
    if (args.set, args.docs_from, args.strategy) != ("sample", 0, "rules"):
        keys += ("set", "docs_from", "strategy")
    keys += tuple(k for k in ("replay", "read") if getattr(args, k))
    settings = {k: getattr(args, k) for k in keys}
    results = json.loads(results_path.read_text()) if results_path.exists() else {"settings": settings, "trained": {}}
    if results["settings"] != settings:
        sys.exit(f"imprint: error: {out} holds a run with other settings ({results['settings']}): use another --out")

    def save():
        results_path.write_text(json.dumps(results, indent=1))

    t0 = time.perf_counter()
    docs = select_docs(args)
    results["docs"] = [p.name for p in docs]
    ws = Workspace.open(out / "ws")
    pipeline.add(ws, [str(p) for p in docs], model=args.model)
    if args.strategy not in {d.name for d in ws.datasets()}:
        pipeline.synth(ws, args.strategy, args.strategy, model=args.model)
    train_all(ws, args.strategy, args, results["trained"], save)
    if "systems" not in results:
        evaluate_all(ws, args, out, results, save)
    print_table(results, args)
    if args.plot:
        dirs = [Path(d).expanduser() for d in args.plot_with.split(",") if d]
        others = [json.loads((d / "results.json").read_text()) for d in dirs]
        print(f"plot: {write_plot(Path(args.plot), [results, *others], args.plot_y)}")
    print(f"\nwall clock this invocation: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
