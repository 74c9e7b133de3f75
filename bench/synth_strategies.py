"""Which synthetic data teaches the embedded model most: held-out accuracy per strategy at an equal token budget.

Arms: `raw` (the chunks), `rules` (offline restatements and questions), `paraphrase`, `qa`, `entigraph`,
`active-reading` (written by the embedded gemma-3-270m itself as the `local` generator, `--gen-tokens` each,
kept only if they pass the quality gates) and `mixed` (equal shares of rules and the four generated sets).
Every arm trains a fresh LoRA module (defaults: rank 32, lr 1e-3, seed 0) on exactly `--train-tokens` training
tokens drawn from its own records (a seeded shuffle, cycled when the set is smaller: the `epochs` column says
how often each record was seen), then answers the 40 held-out questions of `imprint/data/sample/eval.jsonl`
closed-book. The eval questions are never trained on: the strategies see only the corpus, and a leakage check
(3-gram containment of eval questions in the training records) is printed.

Every stage is cached under `--out` (workspace, datasets and their generation journals, modules, scores), so
an interrupted run continues where it stopped and a rerun only prints the table.

    python bench/synth_strategies.py [--gen-tokens 2000] [--train-tokens 60000] [--threads 1] [--out DIR]

`--out` defaults to ~/.cache/imprint/bench/synth_strategies ($IMPRINT_CACHE).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from imprint import pipeline
from imprint.evaluate.evalset import load_eval_set
from imprint.evaluate.leakage import leakage_report
from imprint.evaluate.metrics import exact_match, token_f1
from imprint.methods.loading import load_module
from imprint.models import DEFAULT_MODEL, cache_root, load_tokenizer
from imprint.synth.records import read_records, write_records
from imprint.system import answer_questions
from imprint.train.data import encode_record
from imprint.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "imprint" / "data" / "sample" / "corpus"
EVAL = ROOT / "imprint" / "data" / "sample" / "eval.jsonl"
GENERATED = ["paraphrase", "qa", "entigraph", "active-reading"]
ARMS = ["raw", "rules", *GENERATED, "mixed"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_datasets(ws, args, generator) -> dict:
    """Every strategy's dataset (cached: a finished one with the same budget is reused as it is)."""
    stats = {}
    for strategy in ["raw", "rules", *GENERATED]:
        done = {d.name: d for d in ws.datasets()}.get(strategy)
        wanted = args.gen_tokens if strategy in GENERATED else None
        if done is None or done.manifest.get("tokens_budget") != wanted:
            log(f"synth {strategy}")
            if strategy in GENERATED:
                pipeline.synth(ws, strategy, generator=generator(), tokens=args.gen_tokens, model=args.model)
            else:
                pipeline.synth(ws, strategy, model=args.model)
            done = {d.name: d for d in ws.datasets()}[strategy]
        stats[strategy] = done.manifest
    return stats


def sample_to_budget(records, tokenizer, budget: int, max_len: int, seed: int) -> tuple[list, int]:
    """Records in a seeded shuffled order, cycled, until `budget` training tokens are reached."""
    if not records:
        return [], 0
    sizes = {r.id: len(encode_record(r, tokenizer, max_len).input_ids) for r in records}
    rng = random.Random(seed)
    out, total = [], 0
    while total < budget:
        order = records[:]
        rng.shuffle(order)
        for r in order:
            if total >= budget:
                break
            out.append(r)
            total += sizes[r.id]
    return out, total


def arm_records(ws, arm: str, tokenizer, args) -> tuple[list, int, int]:
    """(records to train on, their training tokens, distinct records behind them)."""

    def records_of(name):
        return read_records(Path(ws.get_dataset(name).path))

    if arm != "mixed":
        pool = records_of(arm)
        picked, tokens = sample_to_budget(pool, tokenizer, args.train_tokens, args.max_len, args.seed)
        return picked, tokens, len(pool)
    pools = {name: records_of(name) for name in ["rules", *GENERATED]}
    pools = {name: pool for name, pool in pools.items() if pool}  # a set the gates emptied gives its share away
    picked, tokens, distinct = [], 0, 0
    for i, pool in enumerate(pools.values()):
        share = args.train_tokens // len(pools)
        part, n = sample_to_budget(pool, tokenizer, share, args.max_len, args.seed + i)
        picked, tokens, distinct = picked + part, tokens + n, distinct + len(pool)
    return picked, tokens, distinct


def train_arm(ws, arm: str, tokenizer, args) -> dict:
    name = f"arm-{arm}"
    if any(m.name == name for m in ws.modules()):
        return json.loads((Path(ws.get_module(name).path) / "manifest.json").read_text())
    records, tokens, distinct = arm_records(ws, arm, tokenizer, args)
    if not records:
        return {}
    manifest = {"name": name, "strategy": f"bench:{arm}", "n_records": len(records), "tokens": tokens,
                "distinct_records": distinct}  # fmt: skip
    directory = ws.data_dir(name)
    write_records(directory, records, manifest)
    ws.register_dataset(name, str(directory), len(records), ws.corpus_version(), manifest)
    log(f"train {name}: {len(records)} records ({distinct} distinct), {tokens} tokens")
    # exactly the sampled budget, as recorded in RESULTS: no replay or open-book copies (train.read) on top of it
    overrides = {"train": {"epochs": 1, "checkpoint_every": 0, "seed": args.seed, "threads": args.threads,
                           "max_len": args.max_len, "replay": 0, "read": 0}}  # fmt: skip
    return pipeline.train_module(ws, [name], name, "lora", args.model, overrides)


def score(ws, arm: str | None, questions, items, args) -> dict:
    from imprint.models import load_base

    t0 = time.perf_counter()
    if arm is None:
        base = load_base(args.model)
        model, tokenizer, mode, label = base.model, base.tokenizer, "base", None
    else:
        model, tokenizer, manifest = load_module(ws, f"arm-{arm}")
        mode, label = "module", f"arm-{arm}@{manifest['version']}"
    answers = answer_questions(model, tokenizer, questions, mode=mode, module=label)
    em = sum(exact_match(a.answer, list(i.answers)) for a, i in zip(answers, items, strict=True)) / len(items)
    f1 = sum(token_f1(a.answer, list(i.answers)) for a, i in zip(answers, items, strict=True)) / len(items)
    rows = [{"id": i.id, "answer": a.answer, "gold": list(i.answers)} for a, i in zip(answers, items, strict=True)]
    return {"em": round(em, 3), "f1": round(f1, 3), "eval_s": round(time.perf_counter() - t0, 1), "answers": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gen-tokens", type=int, default=2000, help="generation budget per generated strategy")
    parser.add_argument("--train-tokens", type=int, default=60000, help="training tokens per arm (20k taught no arm)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--max-len", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default=str(cache_root() / "bench" / "synth_strategies"), help="stage cache")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ",".join(ARMS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if results.get("settings", {}) not in ({}, {k: getattr(args, k) for k in ("gen_tokens", "train_tokens", "seed")}):
        sys.exit(f"{out} holds a run with other settings ({results['settings']}): use another --out")
    results["settings"] = {k: getattr(args, k) for k in ("gen_tokens", "train_tokens", "seed")}

    ws = Workspace.open(out / "ws")
    pipeline.add(ws, [str(CORPUS)], model=args.model)
    generator_cache = {}

    def generator():
        from imprint.synth.generators.local import LocalGenerator

        if "local" not in generator_cache:
            generator_cache["local"] = LocalGenerator(default_model=args.model)
        return generator_cache["local"]

    t0 = time.perf_counter()
    synth_stats = make_datasets(ws, args, generator)
    generator_cache.clear()
    timing = results.setdefault("timing", {})
    timing["synth_s"] = timing.get("synth_s") or round(time.perf_counter() - t0)

    items = [i for i in load_eval_set(EVAL) if i.answers]
    questions = [i.question for i in items]
    arms = [a for a in args.arms.split(",") if a]
    tokenizer = load_tokenizer(args.model)
    scores = results.setdefault("scores", {})
    if "base" not in scores:
        log("eval base")
        scores["base"] = score(ws, None, questions, items, args)
        results_path.write_text(json.dumps(results, indent=1))
    for arm in arms:
        if arm in scores:
            continue
        manifest = train_arm(ws, arm, tokenizer, args)
        if not manifest:
            scores[arm] = {"skipped": "no records passed the gates"}
            continue
        log(f"eval arm-{arm}")
        data = ws.get_dataset(f"arm-{arm}").manifest
        scores[arm] = {**score(ws, arm, questions, items, args), "train_tokens": manifest["metrics"]["tokens"],
                       "train_s": manifest["metrics"]["wall_s"], "records": data["n_records"],
                       "distinct": data["distinct_records"], "loss_last": manifest["metrics"]["loss_last"]}  # fmt: skip
        results_path.write_text(json.dumps(results, indent=1))

    trained = {a: read_records(Path(ws.get_dataset(f"arm-{a}").path)) for a in arms if "em" in scores.get(a, {})}
    leaks = leakage_report(items, trained)
    results["timing"]["total_s_this_invocation"] = round(time.perf_counter() - t_start)
    results_path.write_text(json.dumps(results, indent=1))

    print(f"\ngeneration ({args.model} as the local generator, {args.gen_tokens} tokens per strategy):")
    print(f"{'strategy':<15}{'units':>7}{'tokens':>8}{'candidates':>11}{'kept':>6}{'kept %':>8}  dropped by reason")
    for s in GENERATED:
        m = synth_stats[s]
        g = m["gates"]
        share = 100 * g["kept"] / g["candidates"] if g["candidates"] else 0.0
        reasons = ", ".join(f"{k} {v}" for k, v in g["dropped"].items())
        counts = f"{m['run']['units']:>7}{m['tokens_generated']:>8}{g['candidates']:>11}{g['kept']:>6}"
        print(f"{s:<15}{counts}{share:>7.0f}%  {reasons}")
    print(f"\nheld-out closed-book questions ({len(items)}), LoRA on {args.train_tokens} training tokens per arm:")
    print(f"{'arm':<15}{'distinct':>9}{'epochs':>8}{'tokens':>8}{'train s':>9}{'loss':>7}{'EM':>7}{'F1':>7}")
    base = scores["base"]
    print(f"{'base':<15}{'-':>9}{'-':>8}{'-':>8}{'-':>9}{'-':>7}{base['em']:>7.3f}{base['f1']:>7.3f}")
    for arm in arms:
        s = scores.get(arm, {})
        if "em" not in s:
            print(f"{arm:<15}  {s.get('skipped', 'not run')}")
            continue
        epochs = s["records"] / max(1, s["distinct"])
        print(f"{arm:<15}{s['distinct']:>9}{epochs:>8.1f}{s['train_tokens']:>8}{s['train_s']:>9.0f}"
              f"{s['loss_last']:>7.2f}{s['em']:>7.3f}{s['f1']:>7.3f}")  # fmt: skip
    if scores.get("raw", {}).get("f1"):
        for arm in arms:
            if arm != "raw" and "em" in scores.get(arm, {}):
                print(f"F1 {arm} / raw: {scores[arm]['f1'] / scores['raw']['f1']:.2f}x")
    print(f"leakage check: {'ok' if leaks['ok'] else leaks}")
    print(f"wall clock this invocation: {results['timing']['total_s_this_invocation']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
