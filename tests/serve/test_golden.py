"""Golden outputs of everything that turns the tiny model and its trained modules into text: `imprint ask` in every
mode, `imprint eval` rows and scores, served chat and completions, the local synth generator (with and without a
stop string), and the replay and retention samples. A change of any of them shows up here, in review.

First written before the inference core was unified (issue 16), so that the unification could be checked against
it; rewritten since when evidence stopped carrying the temporary document id, with the module+rag conflict rule
(issue 17) and again when its override was labelled, and with modules that learned their own facts (issue 34:
before, every module wrote the base's filler, so the file could not tell them apart and every score in it was 0).
`git log tests/serve/golden.json` has each rewrite.

Greedy outputs are fixed token for token (answer, guess, confidence, evidence, prompt tokens). Sampled outputs
(self-replay, retention, a sampled local generation) are fixed by what does not depend on the random stream that
draws them: their prompts, count, lengths, determinism under a seed, and how retention scores fixed samples.
`degenerate()` keeps the file worth comparing against: every module answers its own fact, base and modules differ,
scores are neither all 0 nor all 1, and the stop string cuts a generation.

Regenerate only for a deliberate change of outputs (tests/README.md, "Golden files"):
`IMPRINT_GOLDEN_WRITE=1 pytest tests/serve/test_golden.py` writes the file, then fails, naming the parts that
changed, so that the rewrite is reviewed in the diff and never passes unnoticed; it refuses to write degenerate
outputs. Without the variable nothing is written and any difference fails.
"""

import json
import os
from pathlib import Path

import openai
import pytest
from team_facts import CFO, FACTS, LEAVE, OPENED

from imprint.evaluate.forgetting import RETENTION_PROMPTS, retention_samples, score_samples
from imprint.evaluate.run import EvalOptions, evaluate
from imprint.methods.loading import load_module
from imprint.models import BaseModel, load_base
from imprint.prompts import qa_prompt
from imprint.synth.generators import GeneratorConfig
from imprint.synth.generators.local import LocalGenerator
from imprint.system import System
from imprint.train.replay import PROMPTS, self_replay
from imprint.workspace import Workspace

GOLDEN = Path(__file__).with_name("golden.json")
QUESTIONS = [CFO, LEAVE]
ASKED = [("base", None), ("icl", None), ("rag", None), ("module", "alpha@1"), ("module", "alpha@2"),
         ("module", "beta"), ("module", "cart"), ("module", "whole"), ("module", "mem"), ("module+rag", "alpha@1"),
         ("module+rag", "cart")]  # fmt: skip
SERVED = ["tiny", "alpha@1", "beta", "cart", "whole"]
GENERATOR_PROMPTS = [qa_prompt(CFO), qa_prompt(LEAVE), "Lisbon"]


def _answer(a) -> dict:
    # a document's id hashes its path, which is a new temporary folder each run: keep the chunk's version:ordinal
    evidence = [{**e, "score": round(e["score"], 4), "doc_id": "doc", "chunk_id": e["chunk_id"].split(":", 1)[1]}
                for e in a.evidence]  # fmt: skip
    return {"answer": a.answer, "guess": a.guess, "confidence": a.confidence, "abstained": a.abstained,
            "supported": a.supported, "prompt_tokens": a.prompt_tokens, "signals": a.signals, "evidence": evidence,
            "mode": a.mode, "module": a.module}  # fmt: skip


@pytest.fixture(scope="module")
def observed(ws_dir, server, tmp_path_factory):
    """Everything the golden file fixes, computed once."""
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
    ws = Workspace.open(ws_dir)
    out: dict = {"ask": {}, "chat": {}, "completions": {}}
    for mode, module in ASKED:
        answers = System.open(ws, mode, module, model="tiny")(QUESTIONS)
        out["ask"][f"{mode}:{module}"] = [_answer(a) for a in answers]

    eval_set = tmp_path_factory.mktemp("golden-eval") / "eval.jsonl"
    items = [{"question": CFO, "answers": ["Priya Raman"]}, {"question": LEAVE, "answers": ["27"]},
             {"question": OPENED, "answers": ["2021"]},
             {"prompt": "Employees receive", "answers": ["27 days"], "probe": "memorise"},
             {"question": "What is the capital of Atlantis?", "answers": [], "answerable": False}]  # fmt: skip
    eval_set.write_text("".join(json.dumps(i) + "\n" for i in items))
    cache = os.environ.get("IMPRINT_CACHE")
    os.environ["IMPRINT_CACHE"] = str(tmp_path_factory.mktemp("golden-cache"))
    try:
        card = evaluate(ws, [eval_set], ["alpha@1", "cart", "whole"], model="tiny",
                        options=EvalOptions(modes=("base", "rag", "module"), retention_samples=4, retention_tokens=8,
                                           allow_leakage=True))  # fmt: skip
        keep = ("question", "answer", "confidence", "abstained", "supported", "em", "f1", "contained", "prompt_tokens")
        out["eval"] = {s["system"]: [{k: r[k] for k in keep} for r in s["rows"]] for s in card["systems"]}
        scores = ("exact_match", "token_f1", "answer_contained")
        out["eval_scores"] = {s["system"]: {k: s[k] for k in scores} for s in card["systems"]}
        base = load_base("tiny")
        replay = self_replay(base, n_samples=6, max_new_tokens=12, seed=0)
        out["replay"] = {
            "prompts_ok": all(r.text.startswith(p) for r, p in zip(replay, PROMPTS, strict=False)),
            "n": len(replay),
            "same_again": [r.text for r in replay] == [r.text for r in self_replay(base, 6, 12, seed=0)],
            "kinds": sorted({(r.kind, r.strategy, r.generator) for r in replay}),
        }
        samples = retention_samples(base, n=6, max_new_tokens=12, seed=5)
        out["retention"] = {
            "prompts": [s["prompt"] for s in samples],
            "prompt_ids_ok": all(s["prompt_ids"] == base.tokenizer(s["prompt"])["input_ids"] for s in samples),
            "within_budget": all(0 < len(s["sample_ids"]) <= 12 for s in samples),
            "eos_free": all(base.tokenizer.eos_token_id not in s["sample_ids"] for s in samples),
        }
    finally:
        if cache is None:
            os.environ.pop("IMPRINT_CACHE")
        else:
            os.environ["IMPRINT_CACHE"] = cache
    fixed = [{"prompt": RETENTION_PROMPTS[i], "prompt_ids": base.tokenizer(RETENTION_PROMPTS[i])["input_ids"],
              "sample_ids": list(range(40 + i, 50 + i))} for i in range(3)]  # fmt: skip
    scored = score_samples(base.model, fixed)
    out["retention"]["scored_fixed"] = {"nll": round(scored["nll"], 4), "top1": [t.tolist() for t in scored["top1"]]}

    # the generator runs the full fine-tune, a plain model that writes its facts (the random base writes one byte
    # over and over, which a stop string either cuts at once or never meets)
    whole, tokenizer, _ = load_module(ws, "whole@1")
    generator = LocalGenerator(GeneratorConfig(batch_size=2), base=BaseModel("whole@1", whole, tokenizer))
    prompts = GENERATOR_PROMPTS
    out["local"] = {
        "greedy": generator.generate(prompts, max_tokens=10, temperature=0),
        "stopped": generator.generate(prompts, max_tokens=10, temperature=0, stop=["a"]),
    }
    sampled = generator.generate(prompts, max_tokens=10, temperature=1.0, seed=3)
    out["local"]["sampled_contract"] = {
        "n": len(sampled),
        "same_again": sampled == generator.generate(prompts, max_tokens=10, temperature=1.0, seed=3),
    }

    for model in SERVED:
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTIONS[0]}],
                                              max_tokens=24, temperature=0)  # fmt: skip
        text = chat.choices[0].message.content
        if model != "tiny":  # one question to a module: what `imprint ask` answers (the answer-cut rule)
            from imprint.answer import cut_answer

            text = cut_answer(text)
        transcript = client.chat.completions.create(
            model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            max_tokens=10, temperature=0)  # fmt: skip
        out["chat"][model] = {"qa": text, "transcript": transcript.choices[0].message.content,
                              "usage": chat.usage.prompt_tokens}  # fmt: skip
        completion = client.completions.create(model=model, prompt=qa_prompt(OPENED), max_tokens=12, temperature=0)
        sampled = client.completions.create(model=model, prompt=qa_prompt(OPENED), max_tokens=8, temperature=1.8,
                                            seed=11, n=2)  # fmt: skip
        out["completions"][model] = {"greedy": completion.choices[0].text,
                                     "finish": completion.choices[0].finish_reason,
                                     "sampled": [c.text for c in sampled.choices]}  # fmt: skip
    ws.close()
    return json.loads(json.dumps(out))  # tuples as lists, as the file holds them


def degenerate(outputs: dict) -> list[str]:
    """What would make `outputs` useless to compare against: a module not answering its own fact, two systems that
    answer alike, scores all 0 or all 1, a stop string that cuts nothing, a sampled contract that failed."""
    problems = []
    guesses = {key: [a["guess"] for a in answers] for key, answers in outputs["ask"].items()}
    for key, answers in guesses.items():
        mode, module = key.split(":")
        own = list(FACTS[module if "@" in module else f"{module}@1"][:2]) if mode == "module" else None
        if own is not None and answers != own:
            problems.append(f"ask {key} answers {answers}, not its own facts {own}")
    closed_book = [tuple(a) for key, a in guesses.items() if key.startswith(("base:", "module:"))]
    if len(set(closed_book)) != len(closed_book):
        problems.append("two closed-book systems give the same answers")
    served = [c["greedy"] for c in outputs["completions"].values()] + [c["qa"] for c in outputs["chat"].values()]
    if len(set(served)) != len(served):
        problems.append("two served models give the same text")
    rows = [r for system in outputs["eval"].values() for r in system]
    scores = [r[k] for r in rows for k in ("em", "f1", "contained") if r[k] is not None]
    if not (0.0 in scores and 1.0 in scores and any(0 < x < 1 for x in scores)):
        problems.append(f"eval scores are degenerate: {sorted(set(scores))}")
    means = [v for system in outputs["eval_scores"].values() for v in system.values()]
    if len(set(means)) < 3:
        problems.append(f"eval systems score alike: {sorted(set(means))}")
    local = outputs["local"]
    cut = [g.startswith(s) for g, s in zip(local["greedy"], local["stopped"], strict=True)]
    if local["stopped"] == local["greedy"] or not all(cut):
        problems.append("the stop string does not cut the local generator's text")
    if not (outputs["replay"]["prompts_ok"] and outputs["replay"]["same_again"] and outputs["replay"]["n"] == 6):
        problems.append("the self-replay contract failed")
    if not (outputs["retention"]["prompt_ids_ok"] and outputs["retention"]["within_budget"]):
        problems.append("the retention-sample contract failed")
    if not outputs["local"]["sampled_contract"]["same_again"]:
        problems.append("the sampled local generation is not reproducible under its seed")
    return problems


def test_outputs_equal_the_golden_file(observed):
    if os.environ.get("IMPRINT_GOLDEN_WRITE") == "1":
        problems = degenerate(observed)
        assert not problems, f"refusing to write {GOLDEN.name}: {'; '.join(problems)}"
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        changed = sorted(p for p in set(observed) | set(golden) if observed.get(p) != golden.get(p))
        if changed:
            GOLDEN.write_text(json.dumps(observed, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
            pytest.fail(f"rewrote {GOLDEN.name} ({', '.join(changed)} changed): review `git diff {GOLDEN}` and run "
                        "again without IMPRINT_GOLDEN_WRITE")  # fmt: skip
    golden = json.loads(GOLDEN.read_text())
    for part in sorted(golden):
        assert observed[part] == golden[part], part
    assert set(observed) == set(golden)


def test_golden_file_holds_real_answers():
    """The fixed outputs are worth comparing against: every mode answered, every module its own fact, systems differ,
    scores are neither all 0 nor all 1, the stop path cut text, and the sampled contracts held."""
    golden = json.loads(GOLDEN.read_text())
    assert len(golden["ask"]) == len(ASKED) and all(len(v) == len(QUESTIONS) for v in golden["ask"].values())
    assert len(golden["eval"]) == 5 and len(golden["local"]["stopped"]) == len(GENERATOR_PROMPTS)
    assert degenerate(golden) == []


def test_degenerate_outputs_are_refused():
    """What the file held before modules learned anything (every module the base's filler, every score 0, a stop
    string that cut nothing) is refused, so a regeneration cannot slide back to it."""
    golden = json.loads(GOLDEN.read_text())
    filler = json.loads(json.dumps(golden))
    filler["ask"] = {key: golden["ask"]["base:None"] for key in golden["ask"]}
    zeros = json.loads(json.dumps(golden))
    for row in (r for rows in zeros["eval"].values() for r in rows if r["em"] is not None):
        row.update(em=0.0, f1=0.0, contained=0.0)
    uncut = json.loads(json.dumps(golden))
    uncut["local"]["stopped"] = uncut["local"]["greedy"]
    assert any("not its own facts" in p for p in degenerate(filler))
    assert any("two closed-book systems" in p for p in degenerate(filler))
    assert any("eval scores are degenerate" in p for p in degenerate(zeros))
    assert degenerate(uncut) == ["the stop string does not cut the local generator's text"]
