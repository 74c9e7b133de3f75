"""Golden outputs of everything that turns the tiny model into text, fixed before the inference core was unified
(issue 16) and kept unchanged since: `imprint ask` in every mode, `imprint eval` rows, served chat and
completions, the local synth generator, and the replay and retention samples.

Greedy outputs are fixed token for token (answer, guess, confidence, evidence, prompt tokens). Sampled outputs
(self-replay, retention, a sampled local generation) are fixed by what does not depend on the random stream that
draws them: their prompts, count, lengths, determinism under a seed, and how retention scores fixed samples.

`IMPRINT_GOLDEN_WRITE=1 pytest tests/serve/test_golden.py` rewrites `golden.json` (only for a deliberate change of
outputs, reviewed in the diff).
"""

import json
import os
from pathlib import Path

import openai
import pytest

from imprint.evaluate.forgetting import RETENTION_PROMPTS, retention_samples, score_samples
from imprint.evaluate.run import EvalOptions, evaluate
from imprint.models import load_base
from imprint.synth.generators import GeneratorConfig
from imprint.synth.generators.local import LocalGenerator
from imprint.system import System
from imprint.train.replay import PROMPTS, self_replay
from imprint.workspace import Workspace

GOLDEN = Path(__file__).with_name("golden.json")
QUESTIONS = ["Who has served as chief financial officer since March 2019?", "How many days of paid annual leave?"]
ASKED = [("base", None), ("icl", None), ("rag", None), ("module", "alpha@1"), ("module", "beta"), ("module", "cart"),
         ("module", "whole"), ("module+rag", "alpha@1"), ("module+rag", "cart")]  # fmt: skip
SERVED = ["tiny", "alpha@1", "beta", "cart", "whole"]


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
    items = [{"question": QUESTIONS[0], "answers": ["Priya Raman"]}, {"question": QUESTIONS[1], "answers": ["27"]},
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

    generator = LocalGenerator(GeneratorConfig(batch_size=2), base=base)
    prompts = ["Passage: Priya Raman\nRewrite:", "Lisbon", "The office opened in"]
    out["local"] = {
        "greedy": generator.generate(prompts, max_tokens=10, temperature=0),
        "stopped": generator.generate(prompts, max_tokens=10, temperature=0, stop=["e"]),
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
        completion = client.completions.create(model=model, prompt="The Lisbon office", max_tokens=12, temperature=0)
        sampled = client.completions.create(model=model, prompt="The Lisbon office", max_tokens=8, temperature=1.8,
                                            seed=11, n=2)  # fmt: skip
        out["completions"][model] = {"greedy": completion.choices[0].text,
                                     "finish": completion.choices[0].finish_reason,
                                     "sampled": [c.text for c in sampled.choices]}  # fmt: skip
    ws.close()
    return json.loads(json.dumps(out))  # tuples as lists, as the file holds them


def test_outputs_equal_the_golden_file(observed):
    if os.environ.get("IMPRINT_GOLDEN_WRITE"):
        GOLDEN.write_text(json.dumps(observed, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for part in sorted(golden):
        assert observed[part] == golden[part], part
    assert set(observed) == set(golden)


def test_golden_file_holds_real_answers():
    """The fixed outputs are not empty placeholders: every mode answered and the sampled contracts held."""
    golden = json.loads(GOLDEN.read_text())
    assert len(golden["ask"]) == len(ASKED) and all(len(v) == len(QUESTIONS) for v in golden["ask"].values())
    assert any(a["guess"] for v in golden["ask"].values() for a in v)
    assert golden["replay"]["prompts_ok"] and golden["replay"]["same_again"] and golden["replay"]["n"] == 6
    assert golden["retention"]["prompt_ids_ok"] and golden["retention"]["within_budget"]
    assert golden["local"]["sampled_contract"]["same_again"] and len(golden["eval"]) == 5
