"""Batch-invariant answers: a greedy answer is the same token for token asked alone, in a batch of 16, or beside
other modules' rows in one batch; and `imprint ask`, `imprint eval` and the server give the same answer,
confidence and evidence for the same question.

On this CPU (fp32, 2 threads) the tiny model's rows come out bit-identical in every composition: every row's
matmuls reduce over the same inner dimension in the same order whatever the number of rows, and padded
positions add exact zeros to attention. Tokens are compared exactly; log-probabilities to 1e-5, since a kernel
that changes its blocking with the batch size (MKL does, for large matrices) may move them by an ulp.
"""

from pathlib import Path

import pytest

from imprint.evaluate.evalset import EvalItem
from imprint.evaluate.run import score_system
from imprint.inference import answer_row, generate, stop_token_ids
from imprint.inference.modules import ModuleHost
from imprint.methods import loading
from imprint.models import load_base
from imprint.prompts import qa_prompt
from imprint.system import System
from imprint.workspace import Workspace

QUESTIONS = [
    "Who has served as chief financial officer since March 2019?",
    "How many days of paid annual leave?",
    "When did the Lisbon office open?",
    "Who?",
    "What does the team do on Fridays, and who decides where the offsite is held this year?",
    "Is there a pension plan?",
    "Where is the office?",
    "How many employees?",
] * 2
MODULES = {"alpha@1": "lora", "beta@1": "lora", "cart@1": "prefix", None: "base"}


@pytest.fixture(scope="module")
def host(ws_dir):
    """The tiny base with two LoRA modules and a prefix module joined, as the server joins them."""
    host = ModuleHost(load_base("tiny"))
    ws = Workspace.open(ws_dir)
    joined = {}
    for key in [k for k in MODULES if k]:
        entry = ws.module(key)
        joined[key] = loading.join(host, key, entry.method, Path(entry.path))
    ws.close()
    return host, joined


def _rows(host, joined, keys):
    tok = host.base.tokenizer
    stops = stop_token_ids(tok, host.base.model)
    rows = []
    for i, key in enumerate(keys):
        _, _, fields = host.placement(joined.get(key))
        rows.append(answer_row(tok, tok(qa_prompt(QUESTIONS[i % len(QUESTIONS)])).input_ids, 16, stops, **fields))
    return rows


def _run(host, rows, max_batch):
    generate(host.shared_model, host.base.tokenizer, rows, router=host.router, max_batch=max_batch)
    return [(r.ids, r.text) for r in rows]


def test_alone_batched_and_mixed_give_the_same_greedy_tokens(host):
    host, joined = host
    for key in MODULES:
        alone = [_run(host, _rows(host, joined, [key] * 16)[i : i + 1], 1)[0] for i in range(16)]
        batched_rows = _rows(host, joined, [key] * 16)
        assert _run(host, batched_rows, 16) == alone, key
    # one batch of 16 rows over three modules and the base, interleaved: each row answers as it does alone
    keys = [list(MODULES)[i % len(MODULES)] for i in range(16)]
    mixed = _rows(host, joined, keys)
    got = _run(host, mixed, 16)
    for i, key in enumerate(keys):
        (row,) = _rows(host, joined, [key] * (i + 1))[i:]
        alone = _run(host, [row], 1)[0]
        assert got[i] == alone, (i, key)
        assert mixed[i].logprobs == pytest.approx(row.logprobs, abs=1e-5)


def test_ask_eval_and_server_give_the_same_answer(client, ws_dir):
    ws = Workspace.open(ws_dir)
    question = QUESTIONS[0]
    for module in ("beta", "cart"):
        system = System.open(ws, "module", module, model="tiny")
        asked = system([question])[0]
        item = EvalItem(id="q1", question=question, answers=("Priya Raman",))
        (row,) = score_system(system, [item], module)["rows"]
        served = client.chat.completions.create(
            model=module, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0,
            extra_body={"imprint": {"evidence": True}})  # fmt: skip
        info = served.model_extra["imprint"]
        # a plain one-question chat, no temperature given: greedy, and it stops where ask stops
        plain = client.chat.completions.create(model=module, messages=[{"role": "user", "content": question}])
        assert asked.answer == row["answer"] == served.choices[0].message.content == plain.choices[0].message.content
        assert asked.confidence == row["confidence"] == info["confidence"]
        assert asked.evidence == row["evidence"] == info["evidence"]
        assert asked.supported == row["supported"] == info["supported"]
    ws.close()
