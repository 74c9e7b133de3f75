"""Many collections in one workspace: does the 1,000th small collection cost what the first did?

One person's documents are one collection; a workspace may hold thousands. This script fills one workspace with
small collections (one short document each, as `imprint add DOC --collection cNNNN` makes them) and times, for
the collections at the measured points (1, 10, 100, 1000 by default), the three steps a new collection goes
through:

  add     ingest its document into the shared SQLite workspace (`imprint.pipeline.add`);
  index   open its retrieval index (`Retriever.open(ws, collection=...)`: embed its chunks, build its BM25);
  answer  answer one question about it from that index (`answer_questions`, mode rag, k=4, with evidence).

The collections between the points are added and indexed but not asked. Each point is the median of three
consecutive collections (N, N+1, N+2), since a single timing on a shared machine is noisy. Right after each point,
the same three steps are timed for the first collection of three fresh, empty workspaces ("fresh #1"), so a load
change on a shared machine hits both alike. Embedding model, tokenizer and base model are loaded and warmed in a
separate throwaway workspace first. The last lines give, measured in this run, the last point's total against
the first point's and against the fresh #1 timed next to it.

    python bench/collections.py [--points 1,10,100,1000] [--model tiny] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from imprint import pipeline
from imprint.models import load_base
from imprint.retrieval import Retriever
from imprint.system import answer_questions
from imprint.workspace import Workspace

WORDS = ["amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper"]


def document(i: int) -> tuple[str, str, str]:
    """(file text, question, expected code) of collection i: a code only this collection holds."""
    code = f"{WORDS[i % 10]}-{WORDS[(i // 10) % 10]}-{i}"
    text = (
        f"# Team {i} notes\n\nThe access code of team {i} is {code}. Team {i} meets on Tuesdays in room {i % 97}. "
        f"Its budget owner is person number {i * 7}.\n"
    )
    return text, f"What is the access code of team {i}?", code


def step(ws, folder: Path, i: int, base, answer: bool) -> dict[str, float]:
    """Add, index (and answer from) collection i; milliseconds per step."""
    text, question, code = document(i)
    path = folder / f"team{i}.md"
    path.write_text(text)
    name = f"c{i:04d}"
    t0 = time.perf_counter()
    pipeline.add(ws, [str(path)], model=base.name, collection=name)
    t1 = time.perf_counter()
    retriever = Retriever.open(ws, collection=name)
    t2 = time.perf_counter()
    times = {"add": (t1 - t0) * 1000, "index": (t2 - t1) * 1000, "answer": 0.0}
    if answer:
        (result,) = answer_questions(base.model, base.tokenizer, [question], "rag", retriever=retriever, k=4)
        times["answer"] = (time.perf_counter() - t2) * 1000
        if code not in result.evidence[0]["quote"]:  # the bench must measure a correct retrieval
            raise SystemExit(f"collection {name}: evidence {result.evidence[0]['quote']!r} lacks {code}")
    retriever.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="1,10,100,1000", help="collection counts to time (comma list)")
    parser.add_argument("--model", default="tiny", help="base model that answers (tiny: the overhead is visible)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    points = sorted({int(p) for p in args.points.split(",")})
    base = load_base(args.model)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        warm = Workspace.open(Path(tmp) / "warm")
        for i in range(3):  # embedding model, tokenizer, generate() and sqlite-vec loaded and warm
            step(warm, folder, 90_000 + i, base, answer=True)
        warm.close()

        ws = Workspace.open(Path(tmp) / "ws")
        measured = {p: [] for p in points}
        fresh = {p: [] for p in points}
        started = time.perf_counter()
        for i in range(1, points[-1] + 3):
            point = next((p for p in points if p <= i <= p + 2), None)
            times = step(ws, folder, i, base, answer=point is not None)
            if point is not None:
                measured[point].append(times)
                empty = Workspace.open(Path(tmp) / f"fresh-{i}")
                fresh[point].append(step(empty, folder, 80_000 + i, base, answer=True))
                empty.close()
        filled_s = time.perf_counter() - started
        n_collections = len(ws.collections())

    print(f"{n_collections} collections of one document each, base model {base.name}, {args.threads} torch "
          f"thread(s); filled in {filled_s:.0f} s")  # fmt: skip
    print(
        f"{'collection #':>12}  {'add ms':>8}  {'index ms':>8}  {'answer ms':>9}  {'total ms':>8}  {'fresh #1 ms':>11}"
    )
    totals, baseline = {}, {}
    for p in points:
        median = {k: statistics.median(t[k] for t in measured[p]) for k in ("add", "index", "answer")}
        totals[p] = statistics.median(sum(t.values()) for t in measured[p])
        baseline[p] = statistics.median(sum(t.values()) for t in fresh[p])
        cells = f"{median['add']:>8.1f}  {median['index']:>8.1f}  {median['answer']:>9.1f}  {totals[p]:>8.1f}"
        print(f"{p:>12,}  {cells}  {baseline[p]:>11.1f}")
    last, first = points[-1], points[0]
    print(f"ratio #{last:,} / #{first:,} (total): {totals[last] / totals[first]:.2f}")
    print(f"ratio #{last:,} / fresh #1 timed next to it: {totals[last] / baseline[last]:.2f}")


if __name__ == "__main__":
    main()
