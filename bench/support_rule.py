"""How often `supported` says the corpus backs an answer, for right answers and for wrong ones.

No language model answers here: each eval question is "answered" with its own gold answer (right) and with the gold
answer of another question of the same set (wrong, but made of words the corpus does contain: the hard case of a
name or number that occurs elsewhere). Evidence is retrieved as `imprint ask --mode rag` retrieves it, and two rules
are compared on the same evidence:

- words: at least half the answer's content words occur in some retrieved chunk (the rule before 2026-12-07);
- sentence: they occur in a retrieved sentence that is itself about the question, or next to one that is
  (`imprint.answer._evidence`).

A good rule keeps right answers supported and stops supporting wrong ones. Run (squad_dev from ../shared/data):

    python bench/support_rule.py --sets sample,squad_dev
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imprint import pipeline  # noqa: E402
from imprint.answer import _evidence, support  # noqa: E402
from imprint.evaluate.evalset import load_eval_set  # noqa: E402
from imprint.retrieval import Retriever  # noqa: E402
from imprint.workspace import Workspace  # noqa: E402

SHARED = Path(__import__("os").environ.get("IMPRINT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "knowledge"
SETS = {
    "sample": (ROOT / "imprint/data/sample/eval.jsonl", ROOT / "imprint/data/sample/corpus"),
    "squad_dev": (SHARED / "squad_dev/questions.jsonl", SHARED / "squad_dev/corpus"),
}


def measure(eval_path: Path, corpus: Path, model: str, seed: int) -> tuple[int, dict]:
    items = [i for i in load_eval_set(eval_path) if i.answers]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "ws")
        pipeline.add(ws, [str(corpus)], model=model)
        retriever = Retriever.open(ws)
        rng = random.Random(seed)
        others = [i.answers[0] for i in items]
        wrong = []
        for n, item in enumerate(items):  # another question's answer that is not this one's
            wrong.append(rng.choice([a for j, a in enumerate(others) if j != n and a not in item.answers]))
        questions = [i.question for i in items]
        hits = [retriever.search(q) for q in questions]
        result = {}
        for name, answers in (("right", [i.answers[0] for i in items]), ("wrong", wrong)):
            found = _evidence(retriever, questions, answers, hits, None)
            words = [max(support(a, h.text) for h in hs) >= 0.5 for a, hs in zip(answers, hits, strict=True)]
            result[name] = (sum(words) / len(items), sum(f[3] for f in found) / len(items))
        retriever.close()
    return len(items), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="sample,squad_dev", help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--model", default="gemma-3-270m", help="tokenizer the corpus is chunked with")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'set':<11}{'n':>5}{'answers':>9}{'words rule':>12}{'sentence rule':>15}   (share said supported)")
    for name in args.sets.split(","):
        t0 = time.perf_counter()
        n, result = measure(*SETS[name], args.model, args.seed)
        for kind, (words, sentence) in result.items():
            print(f"{name:<11}{n:>5}{kind:>9}{words:>12.3f}{sentence:>15.3f}")
        (rw, rs), (ww, wsen) = result["right"], result["wrong"]
        print(f"{name}: false support on wrong answers {ww:.3f} -> {wsen:.3f}; right answers kept {rs / rw:.2f}x "
              f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
