"""Living knowledge, the whole story on one corpus: learn v1 -> second edition -> update to v2 (and retrain v2 from
scratch) -> eval on the change set, printing adopted / retired / retained, update vs from-scratch, and the time of
each stage.

Sets:
- `sample`: the bundled handbook (`imprint/data/sample/corpus`) and its second edition (`edition2/`: three changed
  documents, one added, `05-expenses.md` removed; `changes.json`), scored on `eval_edition2.jsonl` (questions for
  every kind of change, old answers of changed and removed facts).
- `fictional_dev`: the first `--docs` articles of `../shared/data/knowledge/fictional_dev` (read by path, never
  copied into the project) with the edits in `FICTIONAL_EDITS` (three articles changed, one held back from v1 and
  added in v2, one removed); the edited copies and the change set are written under `--out`, never into the repo.
  `--change one` edits one fact of one article instead (nothing added or removed; cached under
  `--out/fictional_dev-one/`): the common case of a living corpus, where most of it is unchanged.

Each stage is cached under `--out/<set>/` (workspace + results.json), so an interrupted run continues and a rerun
prints the tables; `--until v1` stops after the first module.

    python bench/living.py --set sample --epochs 1 --update-epochs 1

`--out` defaults to ~/.cache/imprint/bench/living ($IMPRINT_CACHE); `--model tiny` checks the plumbing.
It ends with the ratio update wall time / from-scratch wall time measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from imprint import pipeline, registry
from imprint.models import DEFAULT_MODEL, cache_root
from imprint.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "imprint" / "data" / "sample"
FICTIONAL = ROOT.parent / "shared" / "data" / "knowledge" / "fictional_dev"
NAME = "living"
# fictional_dev: (article, old text, new text) for the changed articles; the first article is removed and the
# last of `--docs` is held back from v1 and added in v2
FICTIONAL_EDITS = [
    ("doc002.txt", "BBC iPlayer", "Channel Lumen"),  # the series moves platform: every mention
    ("doc003.txt", "April 2023", "February 2024"),  # the storm's date
    ("doc004.txt", "Toronto", "Lisbon"),  # where the phone won its award
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sample_editions(out: Path) -> tuple[Path, dict, Path]:
    """v1 = the bundled corpus; the second edition overlays `edition2/` and removes what `changes.json` lists."""
    return (
        SAMPLE / "corpus",
        json.loads((SAMPLE / "edition2" / "changes.json").read_text()),
        SAMPLE / "eval_edition2.jsonl",
    )


def fictional_editions(out: Path, docs: int, change: str = "edition") -> tuple[Path, dict, Path]:
    """`change="edition"`: v1 = the first `docs` articles but the last; the second edition edits three
    (`FICTIONAL_EDITS`, applied to the probes' prompts and answers too), adds the last and removes the first.
    `change="one"`: v1 = the first `docs` articles, and the second edition edits one fact of one article (the
    common case of a living corpus: most of it unchanged). Written under `out` only."""
    import dataclasses

    from imprint.evaluate.evalset import load_eval_set, write_eval_set

    if not FICTIONAL.is_dir():
        raise SystemExit(f"imprint: error: fictional_dev not found at {FICTIONAL} (expected ../shared/data/knowledge/)")
    names = sorted(p.name for p in (FICTIONAL / "corpus").iterdir() if p.suffix == ".txt")[:docs]
    v1, edition = out / "v1-source", out / "edition2"
    for folder in (v1, edition):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    one = change == "one"
    added, removed = ([], []) if one else ([names[-1]], [names[0]])
    for name in names if one else names[:-1]:
        shutil.copyfile(FICTIONAL / "corpus" / name, v1 / name)
    for name in added:
        shutil.copyfile(FICTIONAL / "corpus" / name, edition / name)
    edits = {doc: (old, new) for doc, old, new in FICTIONAL_EDITS if doc in names[1:-1]}
    if one:  # the storm's date: one fact of one article
        edits = {doc: edit for doc, edit in edits.items() if doc == "doc003.txt"}
        if not edits:
            raise SystemExit("imprint: error: --change one edits doc003.txt: use --docs 5 or more")
    for doc, (old, new) in edits.items():
        text = (FICTIONAL / "corpus" / doc).read_text()
        assert old in text, (doc, old)
        (edition / doc).write_text(text.replace(old, new))
    changes = {"changed": sorted(edits), "added": added, "removed": removed}
    items = []
    for item in load_eval_set(FICTIONAL / "questions.jsonl"):
        doc = item.doc_ids[0] if item.doc_ids else ""
        if doc not in names or not item.answerable:
            continue
        if doc in removed:
            item = dataclasses.replace(item, answers=(), answerable=False, change="removed", old_answers=item.answers)
        elif doc in added:
            item = dataclasses.replace(item, change="added")
        elif doc in edits:
            old, new = edits[doc]
            answers = tuple(a.replace(old, new) for a in item.answers)
            moved = answers != item.answers
            item = dataclasses.replace(
                item,
                question=item.question.replace(old, new),
                answers=answers,
                change="changed" if moved else "unchanged",
                old_answers=item.answers if moved else (),
            )
        else:
            item = dataclasses.replace(item, change="unchanged")
        items.append(item)
    return v1, changes, write_eval_set(out / "eval_edition2.jsonl", items)


def apply_edition(corpus: Path, edition: Path, changes: dict) -> None:
    """Overlay the edition's changed and added files on the working corpus and delete the removed ones."""
    for name in changes["changed"] + changes["added"]:
        shutil.copyfile(edition / name, corpus / name)
    for name in changes["removed"]:
        (corpus / name).unlink()


def timed(results: dict, key: str, save, work):
    """Run `work()` once: its result and wall time are cached in results[key]."""
    if key not in results:
        t0 = time.perf_counter()
        value = work()
        results[key] = {"value": value, "wall_s": round(time.perf_counter() - t0, 1)}
        save()
    return results[key]["value"]


def run(args) -> dict:
    out = Path(args.out) / (args.set + ("-one" if args.set == "fictional_dev" and args.change == "one" else ""))
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def save():
        results_path.write_text(json.dumps(results, indent=2))

    if args.set == "sample":
        source, changes, eval_path = sample_editions(out)
        edition = SAMPLE / "edition2"
    else:
        source, changes, eval_path = fictional_editions(out, args.docs, args.change)
        edition = out / "edition2"
    corpus, ws = out / "corpus", Workspace.open(out / "ws")
    train = {"epochs": args.epochs, "verify": False, "seed": args.seed}

    def learn():
        shutil.rmtree(corpus, ignore_errors=True)
        shutil.copytree(source, corpus)
        pipeline.add(ws, [str(corpus)], model=args.model)
        data = pipeline.synth(ws, args.strategy, f"{NAME}-v1", model=args.model)
        m = pipeline.train_module(ws, [data["name"]], NAME, "lora", args.model, {"train": train})
        return {"module": f"{NAME}@{m['version']}", "records": m["n_records"], "metrics": m["metrics"]}

    log(f"{args.set}: learn v1 ({args.epochs} epochs)")
    v1 = timed(results, "learn", save, learn)
    log(f"v1 {v1['module']}: {v1['records']} records, {results['learn']['wall_s']} s")
    if args.until == "v1":
        return results

    def second_edition():
        apply_edition(corpus, edition, changes)
        for name in changes["removed"]:
            ws.remove_document(str((corpus / name).resolve()))
        pipeline.add(ws, [str(corpus)], model=args.model)
        return {k: changes[k] for k in ("changed", "added", "removed")}

    timed(results, "edition2", save, second_edition)
    update_train = {**train, "epochs": args.update_epochs}

    def update(from_scratch: bool):
        from imprint.update import update_module

        overrides = {"train": train if from_scratch else update_train}
        if args.unchanged is not None and not from_scratch:
            overrides["update"] = {"unchanged": args.unchanged}
        m = update_module(ws, v1["module"], overrides, from_scratch=from_scratch)
        return {"module": f"{NAME}@{m['version']}", "update": m["update"], "metrics": m["metrics"]}

    log("update v1 -> v2 from v1's weights")
    v2 = timed(results, "update", save, lambda: update(False))
    log(f"update {v2['module']}: {results['update']['wall_s']} s")
    log("retrain v2 from scratch (the exact reference)")
    v3 = timed(results, "scratch", save, lambda: update(True))
    log(f"from scratch {v3['module']}: {results['scratch']['wall_s']} s")

    def score():
        from imprint.evaluate.run import EvalOptions, evaluate

        options = EvalOptions(modes=tuple(args.systems.split(",")), retention_samples=args.retention_samples)
        card = evaluate(ws, [eval_path], [v1["module"], v2["module"], v3["module"]], args.model, options)
        return {"changes": card["changes"], "systems": [_brief(s) for s in card["systems"]]}

    log(f"eval on {eval_path.name}: {args.systems}")
    timed(results, "eval", save, score)
    return results


def _brief(system: dict) -> dict:
    keys = ("system", "mode", "exact_match", "token_f1", "answer_contained", "abstention_unanswerable", "conflicts")
    return {**{k: system.get(k) for k in keys}, "self_retention": system["forgot"]["self"]}


def print_results(results: dict) -> None:
    from rich.console import Console

    from imprint.evaluate.report.terminal import change_table

    card = {"changes": results["eval"]["value"]["changes"]}
    console = Console(width=160)
    console.print(change_table(card))
    for s in results["eval"]["value"]["systems"]:
        agree = s["self_retention"].get("top1_agreement")
        print(f"{s['system']:<22} F1 {s['token_f1']}  contained {s['answer_contained']}  top-1 agreement {agree}")
    times = {k: results[k]["wall_s"] for k in ("learn", "update", "scratch", "eval")}
    print("wall s: " + ", ".join(f"{k} {v}" for k, v in times.items()))
    print(f"ratio update / from-scratch wall time: {times['update'] / times['scratch']:.2f}")
    info = results["update"]["value"]["update"]
    if "share_of_retrain" in info:
        print(
            f"update trained {info['n_new_records']} new + {info['n_unchanged_records']} unchanged + "
            f"{info['n_forget_records']} forget records: {info['share_of_retrain']:.2f} of the retrain's "
            f"{info['n_retrain_records']} (update.unchanged={info['config']['unchanged']})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=("sample", "fictional_dev"), default="sample")
    parser.add_argument("--docs", type=int, default=8, help="fictional_dev: articles used (v1 gets all but the last)")
    parser.add_argument(
        "--change",
        choices=("edition", "one"),
        default="edition",
        help="fictional_dev: 'edition' edits three articles, adds one and removes one; 'one' edits one fact of one",
    )
    parser.add_argument("--strategy", default=registry.DEFAULT_STRATEGY, help="v1's synthesis (updates reuse it)")
    parser.add_argument("--epochs", type=float, default=1.0, help="v1 and from-scratch training epochs")
    parser.add_argument("--update-epochs", type=float, default=1.0, help="epochs of the update")
    parser.add_argument(
        "--unchanged", type=float, default=None, help="update.unchanged: unchanged records replayed per new one"
    )
    parser.add_argument("--systems", default="base,module", help="eval systems (modes), comma-separated")
    parser.add_argument("--retention-samples", type=int, default=8, help="base samples for self-retention")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--until", choices=("v1", "all"), default="all")
    parser.add_argument("--out", default=str(cache_root() / "bench" / "living"), help="stage cache")
    args = parser.parse_args()
    if args.change == "one" and args.set != "fictional_dev":
        parser.error("--change one is a fictional_dev change set (the sample ships its own second edition)")
    print("command: python bench/living.py " + " ".join(sys.argv[1:]), flush=True)
    results = run(args)
    if "eval" in results:
        print_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
