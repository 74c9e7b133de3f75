"""Scores checked against what each system generated: `imprint eval` on a tiny workspace whose two modules learned
different facts, with gold answers taken from the systems' own answers (`imprint.system.System`, as `imprint ask`
answers), so exact match, token F1 and "answer contained" must come out exactly 1 where a system wrote the gold and
exactly 0 where it wrote something else; each row's answer is the generated text, and module+rag's passage quote,
where its conflict rule overrode the model, is scored apart (`override`). Then the same through the CLI with the LLM
judge, `--no-base`, `--retain-limit`, `calibrate --module/--f1/--max-abstain` and `train --config`.

A scorer that always returned 0 or always 1, or an eval that scored the quote instead of the generation, fails here.
"""

import json

import pytest
from judge_server import running_judge
from tiny_modules import teach

from imprint import pipeline
from imprint.answer.calibration import Calibration, calibration_path
from imprint.cli import main
from imprint.evaluate.metrics import normalize
from imprint.evaluate.run import EvalOptions, evaluate
from imprint.system import System
from imprint.workspace import Workspace

CORPUS = (
    "# Team\n\nPriya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year. The Lisbon office opened in 2021.\n"
)
CFO = "Who has served as chief financial officer since March 2019?"
LEAVE = "How many days of paid annual leave?"
OPENED = "When did the Lisbon office open?"
QUESTIONS = [CFO, LEAVE, OPENED]
# kb learned what the corpus says; stale an edition the corpus no longer says. Both also learned to answer with the
# passages in the prompt (train.read=1), so stale's module+rag keeps its stale answers and the conflict rule shows
# the passage instead (`overridden`).
KB = {CFO: "Priya Raman", LEAVE: "27 days", OPENED: "2021"}
STALE = {CFO: "Tomas Berg", LEAVE: "30 days", OPENED: "2022"}
SYSTEMS = {"base": ("base", None), "rag": ("rag", None), "kb@1": ("module", "kb@1"),
           "kb@1+rag": ("module+rag", "kb@1"), "stale@1": ("module", "stale@1"),
           "stale@1+rag": ("module+rag", "stale@1")}  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("scored")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPRINT_CACHE", str(root / "cache"))
        (root / "team.md").write_text(CORPUS)
        ws = Workspace.open(root / "ws")
        pipeline.add(ws, [str(root / "team.md")], model="tiny")
        teach(ws, "kb", "lora", KB, train={"read": 1.0})
        teach(ws, "stale", "lora", STALE, train={"read": 1.0})
        yield ws
        ws.close()


@pytest.fixture(scope="module")
def answered(ws):
    """Each system's answers to the three questions, asked as `imprint ask` asks them."""
    return {name: System.open(ws, mode, module, model="tiny")(QUESTIONS) for name, (mode, module) in SYSTEMS.items()}


def _items(answered) -> list[dict]:
    """Gold from the generations: kb's answer to the CFO question, its first word, an answer nobody gave, stale's
    answer to the office question; and a question without an answer."""
    kb, stale = answered["kb@1"], answered["stale@1"]
    return [
        {"id": "cfo", "question": CFO, "answers": [kb[0].generated]},
        {"id": "cfo-first-word", "question": CFO, "answers": [kb[0].generated.split()[0]]},
        {"id": "leave", "question": LEAVE, "answers": ["a fortnight"]},
        {"id": "opened", "question": OPENED, "answers": [stale[2].generated]},
        {"id": "atlantis", "question": "What is the capital of Atlantis?", "answers": [], "answerable": False},
    ]


def _write(path, items: list[dict]):
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def _words(text: str) -> set[str]:
    return set(normalize(text).split())


def _expected(generated: str, gold: str) -> tuple[float, float, float]:
    """(em, f1, contained) for the two cases this test builds, worked out by hand: the gold itself, or text sharing
    no word with it; and the first word of a longer answer (F1 = 2 / (words + 1): precision 1/words, recall 1)."""
    if generated == gold:
        return 1.0, 1.0, 1.0
    words = generated.split()
    if len(words) > 1 and gold == words[0]:
        return 0.0, round(2 / (len(words) + 1), 4), 1.0
    assert not _words(generated) & _words(gold), (generated, gold)  # the test's own premise
    return 0.0, 0.0, 0.0


def test_the_modules_learned_different_answers(answered):
    """The premise: kb and stale answer their own facts closed book, and the base neither."""
    assert [a.generated for a in answered["kb@1"]] == list(KB.values())
    assert [a.generated for a in answered["stale@1"]] == list(STALE.values())
    facts = [*KB.values(), *STALE.values()]
    assert not any(_words(a.generated) & _words(fact) for a in answered["base"] for fact in facts)


def test_eval_scores_what_each_system_generated(ws, answered, tmp_path):
    items = _items(answered)
    path = _write(tmp_path / "eval.jsonl", items)
    options = EvalOptions(modes=("base", "rag", "module", "module+rag"), retention_samples=2, retention_tokens=8,
                          allow_leakage=True)  # fmt: skip
    card = evaluate(ws, [path], ["kb", "stale"], model="tiny", options=options)
    systems = {s["system"]: s for s in card["systems"]}
    assert list(systems) == list(SYSTEMS)
    position = {CFO: 0, LEAVE: 1, OPENED: 2}
    overridden = 0
    for name, system in systems.items():
        expected = []
        for item, row in zip(items, system["rows"], strict=True):
            assert row["id"] == item["id"]
            if not item.get("answerable", True):
                assert (row["em"], row["f1"], row["contained"]) == (None, None, None)
                continue
            shown = answered[name][position[item["question"]]]
            assert row["answer"] == shown.generated, (name, item["id"])  # what the model wrote, never the quote
            want = _expected(shown.generated, item["answers"][0])
            assert (row["em"], round(row["f1"], 4), row["contained"]) == want, (name, item["id"], row["answer"])
            expected.append(want)
            assert row["overridden"] == shown.overridden
            if shown.overridden:  # the passage the conflict rule showed instead, scored apart
                overridden += 1
                quote = row["override"]["answer"]
                assert quote == shown.answer == row["evidence"][0]["quote"] and quote != row["answer"]
                contained = float(f" {normalize(item['answers'][0])} " in f" {normalize(quote)} ")
                assert row["override"]["contained"] == contained and row["override"]["em"] == 0.0
            else:
                assert row["override"] is None
        n = len(expected)
        assert system["exact_match"] == round(sum(e[0] for e in expected) / n, 4), name
        assert system["token_f1"] == round(sum(e[1] for e in expected) / n, 4), name
        assert system["answer_contained"] == round(sum(e[2] for e in expected) / n, 4), name
    assert overridden >= 2 and not any(r["overridden"] for r in systems["kb@1+rag"]["rows"])
    # the scores tell the systems apart: kb wrote the CFO gold, stale the office gold, the base neither
    assert systems["kb@1"]["exact_match"] == systems["stale@1"]["exact_match"] == 0.25
    assert systems["kb@1"]["answer_contained"] == 0.5 and systems["base"]["token_f1"] == 0.0


def test_eval_on_the_command_line_with_a_judge_without_base_and_with_few_retention_items(ws, answered, tmp_path):
    path = _write(tmp_path / "eval.jsonl", _items(answered))
    retain = [{"id": f"r{i}", "question": f"What is {i} plus {i}?", "answers": [str(2 * i)], "split": "retain"}
              for i in range(6)]  # fmt: skip
    retain_path = _write(tmp_path / "retain.jsonl", retain)
    seen: list[dict] = []
    with running_judge(seen) as url:
        args = ["--workspace", str(ws.root), "eval", str(path), str(retain_path), "--module", "kb", "--model", "tiny",
                "--systems", "base,module", "--no-base", "--retain-limit", "2", "--retention-samples", "2",
                "--judge-url", url, "--judge-model", "grader", "--allow-leakage", "--json"]  # fmt: skip
        assert main(args) == 0
    card = json.loads(max((ws.root / "reports").glob("*/scorecard.json")).read_text())
    assert [s["system"] for s in card["systems"]] == ["kb@1"]  # --no-base: the base is not scored
    (kb,) = card["systems"]
    # still the reference for forgetting: the module's retention is measured against the base's
    assert kb["forgot"]["self"]["top1_agreement"] < 1.0 and card["n_retain"] == 2
    assert kb["forgot"]["benchmarks"]["retain"]["n"] == 2
    # the judge graded every answerable row; it calls an answer right when the gold is in it
    assert [r["judge"] for r in kb["rows"] if r["answerable"]] == [1.0, 1.0, 0.0, 0.0]
    assert kb["judge_accuracy"] == 0.5 and kb["exact_match"] == 0.25
    assert len(seen) == 4 and all(body["model"] == "grader" for body in seen)
    assert any(f"System's answer: {KB[CFO]}" in body["messages"][-1]["content"] for body in seen)


def test_calibrate_a_module_with_its_own_f1_and_abstention_bounds(ws, answered, tmp_path, request):
    path = _write(tmp_path / "cal.jsonl", _items(answered))
    base_args = ["--workspace", str(ws.root), "calibrate", str(path), "--mode", "module", "--module", "kb"]
    saved = calibration_path(ws.root, "module:kb@1")  # --module: the module's own calibration
    request.addfinalizer(lambda: saved.unlink(missing_ok=True))  # the other tests answer uncalibrated
    assert main([*base_args, "--model", "tiny", "--f1", "0.9", "--max-abstain", "0.5"]) == 0
    report = json.loads(saved.read_text())["report"]
    correct = {r["id"]: r["correct"] for r in report["rows"]}
    # --f1 0.9: the first word alone (F1 0.67) is no longer right, as it would be at the default 0.5
    assert correct == {"cfo": True, "cfo-first-word": False, "leave": False, "opened": False, "atlantis": False}
    assert report["correct_if_f1_at_least"] == 0.9
    # --max-abstain 0.5: the threshold abstains on 2 of the 4 answerable questions it was fitted on (default 0.1: 0)
    calibration = Calibration.load(saved)
    answerable = [r for r in report["rows"] if r["answerable"]]
    assert sum(calibration.should_abstain(r["features"]) for r in answerable) == 2
    assert main([*base_args, "--model", "tiny"]) == 0
    calibration = Calibration.load(saved)
    assert sum(calibration.should_abstain(r["features"]) for r in answerable) == 0


def test_train_reads_a_yaml_config_under_the_command_line(ws, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("train: {epochs: 2, lr: 0.002, replay: 0, read: 0, verify: false}\nlora: {r: 2, alpha: 4}\n")
    args = ["--workspace", str(ws.root), "train", "--data", "kb-v1", "--name", "configured", "--model", "tiny",
            "--config", str(config), "--set", "lora.r=3"]  # fmt: skip
    assert main(args) == 0
    manifest = ws.module("configured").manifest
    assert manifest["config"]["lora"]["r"] == 3  # --set wins over the file
    assert manifest["config"]["lora"]["alpha"] == 4 and manifest["config"]["train"]["lr"] == 0.002
    assert manifest["config"]["train"]["epochs"] == 2 and manifest["metrics"]["steps"] == 2
