"""`imprint eval` end to end on the tiny model: scorecard.json, and report.html as headless Chromium renders it."""

import json
import re

import pytest
from skip_policy import skip_or_fail

from imprint.cli import main
from imprint.evaluate.report.browser import find_chromium
from imprint.synth.records import read_records
from imprint.workspace import Workspace

CORPUS = (
    "# Team\n\nPriya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year.\n"
)
QUESTIONS = [
    {"id": "cfo", "question": "Which executive looks after the money?", "answers": ["Priya Raman"]},
    {"id": "leave", "question": "How much annual leave is there?", "answers": ["27 days", "27"]},
    {"id": "pick", "question": "Leave days per year?", "answers": ["27"], "choices": ["12", "27", "40"]},
    {"id": "cto", "question": "Who is the CTO?", "answers": [], "answerable": False},
    {"id": "paris", "question": "What is the capital of France?", "answers": ["Paris"], "split": "retain"},
    {"id": "planet", "question": "Largest planet?", "answers": ["Jupiter"], "choices": ["Mars", "Jupiter"],
     "split": "retain"},
]  # fmt: skip

NO_CHECK = ["--set", "train.verify=false"]  # these runs are too short to teach the tiny model anything


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPRINT_HOME", str(tmp / "ws"))
        mp.setenv("IMPRINT_MODEL", "tiny")
        mp.setenv("IMPRINT_CACHE", str(tmp / "cache"))
        (tmp / "docs").mkdir()
        (tmp / "docs" / "team.md").write_text(CORPUS)
        assert (
            main(
                ["learn", str(tmp / "docs"), "--name", "hb", "--set", "train.epochs=1", "--set", "lora.r=4", *NO_CHECK]
            )
            == 0
        )
        questions = tmp / "eval.jsonl"
        questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
        eval_args = ["eval", str(questions), "--module", "hb", "--retention-samples", "3"]  # every system
        assert main(eval_args) == 0
        report_dir = max((tmp / "ws" / "reports").iterdir())
        yield {"tmp": tmp, "dir": report_dir, "card": json.loads((report_dir / "scorecard.json").read_text())}


def test_scorecard_holds_learned_forgot_and_cost_for_every_system(run):
    card = run["card"]
    assert [s["system"] for s in card["systems"]] == ["base", "icl", "rag", "hb@1", "hb@1+rag"]
    assert [s["mode"] for s in card["systems"]] == ["base", "icl", "rag", "module", "module+rag"]
    assert card["leakage"]["ok"] and card["leakage"]["datasets"] == ["hb-prose"]
    assert card["n_questions"] == 4 and card["n_retain"] == 2
    assert card["command"].startswith("imprint eval ") and "--module hb" in card["command"]
    manifest = json.loads((run["tmp"] / "ws" / "modules" / "hb" / "1" / "manifest.json").read_text())
    base, icl, rag, module, module_rag = card["systems"]
    # forgetting belongs to the weights: icl and rag share the base's, module+rag its module's
    assert icl["forgot"] == rag["forgot"] == base["forgot"] and module_rag["forgot"] == module["forgot"]
    assert module_rag["cost"]["module_bytes"] == module["cost"]["module_bytes"] and rag["cost"]["module_bytes"] is None
    assert icl["cost"]["prompt_tokens_mean"] > base["cost"]["prompt_tokens_mean"]  # the corpus is in the prompt
    assert all(r["evidence"] for r in rag["rows"])  # retrieval modes show the chunks they read
    assert base["forgot"]["self"]["top1_agreement"] == 1.0 and base["forgot"]["self"]["nll_delta"] == 0.0
    # scored on the base's own samples (--retention-samples 3), the change measured from the base's NLL on them
    mine, theirs = module["forgot"]["self"], base["forgot"]["self"]
    assert mine["samples"] == theirs["samples"] == 3 and mine["tokens"] == theirs["tokens"] > 0
    assert mine["nll_delta"] == pytest.approx(mine["nll"] - theirs["nll"], abs=2e-4)
    assert module["cost"]["module_bytes"] == manifest["module_bytes"] > 0
    assert module["cost"]["train_wall_s"] == manifest["metrics"]["wall_s"] and base["cost"]["train_wall_s"] is None
    assert card["modules"]["hb@1"]["metrics"]["loss_curve"] == manifest["metrics"]["loss_curve"]
    for s in card["systems"]:
        assert s["n"] == 2 and s["n_choice"] == 1 and s["n_unanswerable"] == 1
        assert [r["id"] for r in s["rows"]] == ["cfo", "leave", "cto"] and s["choice_rows"][0]["id"] == "pick"
        assert set(s["forgot"]["benchmarks"]) == {"eval"} and s["forgot"]["benchmarks"]["eval"]["n"] == 2
        bench = s["forgot"]["benchmarks"]["eval"]  # each figure with its standard error, the change's paired
        assert {"token_f1_se", "exact_match_se", "token_f1_delta", "token_f1_delta_se"} <= set(bench)
        assert s["forgot"]["self"]["samples"] > 1 and s["forgot"]["self"]["top1_agreement_se"] is not None
        assert s["cost"]["latency_ms_p50"] > 0 and s["cost"]["prompt_tokens_mean"] > 0
        # one epoch teaches the tiny model nothing: every system misses every gold word, so its ECE is its mean
        # confidence (all answers wrong)
        assert (s["exact_match"], s["token_f1"], s["answer_contained"]) == (0.0, 0.0, 0.0), s["system"]
        confidences = [r["confidence"] for r in s["rows"] if r["answerable"]]
        assert s["ece"] == pytest.approx(sum(confidences) / len(confidences), abs=1e-3) and s["ece"] > 0


def test_report_is_self_contained(run):
    html = (run["dir"] / "report.html").read_text()
    # nothing fetched: only in-page references (the SVGs' own "#id" clip paths and markers)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)|url\((?!#)|@import|<script|<link""", html, re.IGNORECASE)
    assert html.count('<svg id="learned-vs-forgot"') == 1 and html.count('<svg id="loss-curves"') == 1


def test_report_renders_in_headless_chromium(run, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        # locally a skip; in CI (.ci/run fetches it first) a failure: the rendered report must be checked there
        skip_or_fail("no Chromium: run scripts/get-chromium.sh, put chromium on PATH, or set IMPRINT_CHROMIUM")
    import numpy as np
    from PIL import Image

    page = run["dir"] / "report.html"
    dom = chromium.dump_dom(page)
    assert re.search(r'<svg id="learned-vs-forgot"[^>]*>', dom)
    assert len(re.findall(r'<g id="point-[^"]+"', dom)) == 5  # one scatter point per system
    assert dom.count('<tr class="system">') == 5  # scorecard rows
    assert dom.count('<tr class="question">') == 4  # every learn question: 3 open + 1 multiple choice
    assert 'id="retention"' in dom and 'id="leakage"' in dom

    png = chromium.screenshot(page, tmp_path / "report.png", width=1280, height=1600)
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    assert pixels.shape == (1600, 1280, 3)
    ink = (pixels.sum(-1) < 600).mean()
    assert ink > 0.01  # text, tables and axes were drawn, not a blank page
    module_green = (np.abs(pixels - [5, 150, 105]).max(-1) < 12).sum()
    assert module_green > 20  # the module's scatter point (#059669) is on screen


def test_leaked_questions_stop_the_run_unless_allowed(run, capsys, monkeypatch):
    tmp = run["tmp"]
    monkeypatch.setenv("IMPRINT_HOME", str(tmp / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp / "cache"))
    dataset = Workspace.open(tmp / "ws").get_dataset("hb-prose")
    trained = next(r for r in read_records(__import__("pathlib").Path(dataset.path)) if r.kind == "qa")
    leaked = tmp / "leaked.jsonl"
    leaked.write_text(json.dumps({"id": "copy", "question": trained.question, "answers": [trained.answer]}) + "\n")
    capsys.readouterr()
    assert main(["eval", str(leaked), "--module", "hb", "--systems", "module", "--retention-samples", "3"]) == 1
    err = capsys.readouterr().err
    assert "leaked into the training data" in err and "copy" in err and "--allow-leakage" in err

    allowed = ["eval", str(leaked), "--module", "hb", "--systems", "module", "--retention-samples", "3"]
    assert main([*allowed, "--allow-leakage"]) == 0
    assert "LEAKAGE" in capsys.readouterr().out
    report_dir = max((tmp / "ws" / "reports").iterdir())
    card = json.loads((report_dir / "scorecard.json").read_text())
    assert not card["leakage"]["ok"] and card["leakage"]["leaked_items"] == ["copy"]
    assert "LEAKAGE: 1 eval question(s)" in (report_dir / "report.html").read_text()
