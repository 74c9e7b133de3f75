"""Mutation check of four core modules: how many small faults (mutants) in each does its own test selection miss?

mutmut 3 (a dev tool, not a project dependency: `.venv/bin/pip install mutmut==3.8.1`) rewrites every function of
the file into many mutants (`<` for `<=`, `and` for `or`, a constant changed, an argument dropped, ...) and runs,
for each mutant, only the tests of the selection that call that function (mapped in one traced run). A mutant that
no test fails on "survived"; one whose function no selected test reaches has "no tests". Both are misses, so the
survivor rate is (survived + no tests) / checked; a timeout counts as caught (the mutant hung the code).

Each module runs in its own scratch copy of the tree (`imprint/`, `tests/`, `pyproject.toml`, tracked and untracked
files that git does not ignore) under --work, with a generated `setup.cfg` holding its file and test selection, so a
tree at another commit (a `git worktree`) is measured with its own tests by the same command. Runs are niced, one
mutant at a time, torch on one thread (2 shared cores). mutmut forks each mutant from a warmed fork server.

--sample F checks a fraction of each module's mutants, chosen by a hash of the mutant's name and --seed, so the same
mutant (same function, same number) is in the sample at every commit where it exists. --rerun reuses a work folder:
fresh tests are copied in and only the mutants not caught last time are run again (adding tests cannot revive a
caught mutant), which is how a new test's effect is measured without a full rerun; --from LABEL starts that rerun
from a copy of another label's results (e.g. a commit whose file is the same and whose tests are older).

    python bench/mutation.py [--tree PATH] [--label after] [--modules answer,metrics,service,db] [--sample 1.0]
                             [--seed 0] [--rerun [--from LABEL]] [--work /tmp/imprint-mutation]

Prints one table (module, mutants, checked, killed, survived, no tests, timeout, survivor rate) and writes each
missed mutant's diff to <work>/<label>/<module>/survivors.diff.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (file, pytest arguments): the tests that mirror the file and run in seconds on the tiny model. The serve
# selection leaves out the schemathesis fuzz (random cases), the load test (200 requests), the CLI server (another
# process, which mutmut cannot see into) and the golden/batch-invariance files (slow fixtures, other code paths).
MODULES = {
    "answer": ("imprint/answer/__init__.py", ["tests/test_answer.py", "tests/test_answer_conflict.py"]),
    "metrics": ("imprint/evaluate/metrics.py", ["tests/evaluate/test_metrics.py"]),
    "service": (
        "imprint/serve/service.py",
        [
            "tests/serve/test_api.py",
            "tests/serve/test_tenants.py",
            "tests/serve/test_two_tenants.py",
            "tests/serve/test_modules_cache.py",
            "tests/serve/test_retrieval.py",
            "-m",
            "not slow",
        ],
    ),  # fmt: skip
    "db": ("imprint/workspace/db.py", ["tests/workspace/"]),
}
MISSED = ("survived", "no tests")


def copy_tree(tree: Path, dest: Path) -> None:
    """The files a test run needs, as git sees them in `tree` (tracked or untracked, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "imprint", "tests", "pyproject.toml"],
        cwd=tree, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        if (tree / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / name, dest / name)


ORDER_HOOK = """

# bench/mutation.py: run the tests mutmut names in the order of a full run (mutmut passes them in set order, and
# tests that share a module-scoped server count on the ones before them)
def pytest_collection_modifyitems(items):
    files = {files!r}
    rank = {{f: i for i, f in enumerate(files)}}

    def key(item):
        path = item.nodeid.split("::")[0]
        where = min((i for f, i in rank.items() if path.startswith(f)), default=len(files))
        params = sorted(getattr(item, "callspec", None).indices.items()) if hasattr(item, "callspec") else []
        return where, path, item.reportinfo()[1] or 0, params

    items.sort(key=key)
"""


def pin_test_order(work: Path, tests: list[str]) -> None:
    """Append ORDER_HOOK to the scratch copy's tests/conftest.py (the tree's own file is not touched)."""
    files = [t for t in tests if t.startswith("tests/")]
    with (work / "tests" / "conftest.py").open("a") as out:
        out.write(ORDER_HOOK.format(files=files))


def setup_cfg(path: str, tests: list[str]) -> str:
    lines = "\n".join(f"    {t}" for t in tests)
    return (
        "[mutmut]\nsource_paths = imprint\n"
        f"only_mutate = {path}\n"
        f"pytest_add_cli_args_test_selection =\n{lines}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n"
        "process_isolation = forkserver\n"
    )


def all_mutants(path: str) -> list[str]:
    """Every mutant name mutmut makes of `path` (run from a folder that holds a mutmut setup.cfg)."""
    from mutmut.mutation.file_mutation import mutate_file_contents

    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    made = mutate_file_contents(path, Path(path).read_text(), None, None)
    return [f"{module}.{name}" for name in made.mutant_names]


def in_sample(name: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def statuses(work: Path, path: str) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    meta = json.loads((work / "mutants" / f"{path}.meta").read_text())
    return {name: status_by_exit_code[code] for name, code in meta["exit_code_by_key"].items()}


def mutmut(work: Path, args: list[str], log: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("IMPRINT_CI", "CI")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    cmd = ["nice", "-n", "15", sys.executable, "-m", "mutmut", *args]
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd[:6])} ... ({len(args)} args)\n")
        out.flush()
        done = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"mutmut failed in {work} (exit {done.returncode}): see {log}")


def run_module(key: str, tree: Path, work: Path, fraction: float, seed: int, rerun: bool, start: Path | None) -> dict:
    path, tests = MODULES[key]
    if start is not None:  # rerun from another label's results, which stay as they were
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(start, work, symlinks=True)
    if rerun:
        if (tree / path).read_bytes() != (work / path).read_bytes():
            sys.exit(f"{path} differs from the one mutated in {work}: run without --rerun")
        # the tree's code and tests now; only the mutated file and its results stay
        for name in ("imprint", "tests", "mutants/tests"):
            shutil.rmtree(work / name, ignore_errors=True)
        keep = {work / "mutants" / f"{path}{suffix}" for suffix in ("", ".meta", ".spans")}
        for old in sorted((work / "mutants" / "imprint").rglob("*"), reverse=True):
            if old.is_file() and old not in keep:
                old.unlink()
        copy_tree(tree, work)
        pin_test_order(work, tests)
        (work / "setup.cfg").write_text(setup_cfg(path, tests))
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)  # map tests to functions afresh
        before = statuses(work, path)
        names = [n for n, s in before.items() if s in MISSED or s == "suspicious"]
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        copy_tree(tree, work)
        pin_test_order(work, tests)
        (work / "setup.cfg").write_text(setup_cfg(path, tests))
        cwd = os.getcwd()
        os.chdir(work)
        try:
            names = [n for n in all_mutants(path) if fraction >= 1 or in_sample(n, fraction, seed)]
        finally:
            os.chdir(cwd)
    log = work / "mutmut.log"
    if names:
        # every mutant when not sampling: mutmut then also records the ones no selected test reaches
        mutmut(work, ["run", "--max-children", "1", *([] if fraction >= 1 and not rerun else names)], log)
    result = statuses(work, path)
    checked = {n: s for n, s in result.items() if s != "not checked"}
    missed = sorted(n for n, s in checked.items() if s in MISSED)
    with (work / "survivors.diff").open("w") as out:
        for name in missed:
            shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True,
                                   text=True).stdout  # fmt: skip
            out.write(shown + "\n")
    count = {s: sum(v == s for v in checked.values()) for s in ("killed", "survived", "no tests", "timeout")}
    other = len(checked) - sum(count.values())
    return {"module": path, "mutants": len(result), "checked": len(checked), **count, "other": other,
            "rate": len(missed) / len(checked) if checked else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to measure (its code and its tests)")
    parser.add_argument("--label", default="after", help="names the work folder: <work>/<label>/<module>")
    parser.add_argument("--modules", default=",".join(MODULES), help=f"comma-separated, of {', '.join(MODULES)}")
    parser.add_argument("--sample", default="1.0", help="fraction of mutants to check: one number, or key=F,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rerun", action="store_true", help="rerun the missed mutants of an earlier run")
    parser.add_argument("--from", dest="start", help="with --rerun: start from this label's results (copied)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imprint-mutation"))
    args = parser.parse_args()
    keys = args.modules.split(",")
    fractions = dict.fromkeys(keys, 1.0)
    for part in args.sample.split(","):
        key, _, value = part.rpartition("=")
        fractions.update({key: float(value)} if key else dict.fromkeys(keys, float(value)))
    tree = args.tree.resolve()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    print(f"tree {tree} at {commit.stdout.strip()}, seed {args.seed}")
    rows = []
    for key in keys:
        start = args.work / args.start / key if args.start else None
        row = run_module(key, tree, args.work / args.label / key, fractions[key], args.seed, args.rerun, start)
        rows.append({**row, "sample": fractions[key]})
        print(json.dumps(row), flush=True)
    print("| module | sample | mutants | checked | killed | survived | no tests | timeout | other | survivor rate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rate = "-" if r["rate"] is None else f"{r['rate']:.1%}"
        print(f"| {r['module']} | {r['sample']:g} | {r['mutants']} | {r['checked']} | {r['killed']} | "
              f"{r['survived']} | {r['no tests']} | {r['timeout']} | {r['other']} | {rate} |")  # fmt: skip


if __name__ == "__main__":
    main()
