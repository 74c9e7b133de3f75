"""lm-evaluation-harness (in the `test` extra): the module runs as a PEFT adapter loaded by the harness itself.

The harness scores a local multiple-choice task (a JSONL wrapped as a task YAML: no download) with the same
prompt and continuation imprint's own choice scorer uses, so for the base and for the module (imprint attaches
it itself; the harness through `peft=`) the two must report the same accuracies: an independent check of
`choice.py`, and of the adapter path handed to the harness.
"""

import json

import pytest
from skip_policy import skip_or_fail

from imprint.cli import main
from imprint.evaluate.forgetting import lm_eval_available

TASK = """task: imprint_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{choices.index(answers[0])}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
ITEMS = [
    {"question": "Largest planet?", "choices": ["Mars", "Jupiter", "Venus"], "answers": ["Jupiter"]},
    {"question": "Boiling point of water?", "choices": ["100 C", "50 C"], "answers": ["100 C"]},
    {"question": "Capital of France?", "choices": ["Paris", "Lyon", "Nice", "Lille"], "answers": ["Paris"]},
    {"question": "Legs on a spider?", "choices": ["six", "eight"], "answers": ["eight"]},
]


def test_harness_agrees_with_imprint_choice_scores_with_the_adapter_loaded(tmp_path, monkeypatch, capsys):
    from imprint.testing import tiny_lm

    if not lm_eval_available():  # in the test extra: a skip locally, a broken install in CI
        skip_or_fail("lm-evaluation-harness is not installed: pip install -e '.[test]'")
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tokenizer = tiny_lm()
    base_dir = tmp_path / "tiny-base"
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "team.md").write_text("# Team\n\nPriya Raman has served as CFO since March 2019.\n")
    learn = ["learn", str(tmp_path / "docs"), "--name", "hb", "--model", str(base_dir), "--set", "train.epochs=3"]
    learn += ["--set", "train.verify=false"]
    assert main([*learn, "--set", "lora.r=4", "--set", "train.lr=5e-2"]) == 0

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({**item, "split": "retain"}) + "\n" for item in ITEMS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "imprint_mc.yaml").write_text(TASK.format(data=data))
    args = ["eval", str(data), "--module", "hb", "--systems", "base,module", "--retention-samples", "2"]
    assert main([*args, "--lm-eval", "imprint_mc", "--lm-eval-include", str(tasks)]) == 0
    report_dir = max((tmp_path / "ws" / "reports").iterdir())
    card = json.loads((report_dir / "scorecard.json").read_text())
    for system in card["systems"]:
        harness = system["forgot"]["lm_eval"]["imprint_mc"]
        ours = system["forgot"]["benchmarks"]["mc"]
        assert harness["acc,none"] == pytest.approx(ours["choice_accuracy"])
        assert harness["acc_norm,none"] == pytest.approx(ours["choice_accuracy_norm"])
