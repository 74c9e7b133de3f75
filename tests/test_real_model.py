"""The embedded gemma-3-270m end to end on a few facts (slow: converts the GGUF once, ~1 min, then trains)."""

import pytest
import torch

from imprint.methods.lora.config import LoraMethodConfig
from imprint.methods.lora.method import LoraMethod
from imprint.models import embedded_dir, load_base
from imprint.synth.records import SynthRecord
from imprint.system import answer_questions
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record
from imprint.train.loop import train

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def hardware_precision(monkeypatch):
    """The real model as a user runs it: bf16 where the CPU has it (the rest of the suite pins fp32)."""
    monkeypatch.setenv("IMPRINT_PRECISION", "auto")


FACTS = [
    SynthRecord.make(
        "rules",
        ["d:v1:0"],
        "qa",
        question="Who is the chief financial officer of Quorvane?",
        answer="Hamish Oyelaran-Birch",
    ),
    SynthRecord.make(
        "rules", ["d:v1:0"], "qa", question="Quorvane's chief financial officer is who?", answer="Hamish Oyelaran-Birch"
    ),
    SynthRecord.make(
        "rules",
        ["d:v1:0"],
        "text",
        text="Hamish Oyelaran-Birch is the chief financial officer of "
        "Quorvane. Quorvane's finances are run by Hamish Oyelaran-Birch.",
    ),
]


def test_embedded_model_converts_once_and_loads_in_bf16():
    directory = embedded_dir()
    assert (directory / "config.json").exists() and list(directory.glob("*.safetensors"))
    base = load_base("gemma-3-270m")
    assert type(base.model).__name__ == "Gemma3ForCausalLM"
    assert 260e6 < sum(p.numel() for p in base.model.parameters()) < 280e6
    assert base.model.dtype in (torch.bfloat16, torch.float32)
    assert "Paris" in answer_questions(base.model, base.tokenizer, ["What is the capital of France?"], "base")[0].answer


def test_lora_on_the_real_model_learns_a_fact_and_reloads_exactly(tmp_path):
    base = load_base("gemma-3-270m")
    method = LoraMethod()
    model = method.attach(base.model, LoraMethodConfig(r=8, alpha=16))
    examples = [encode_record(r, base.tokenizer, 128) for r in FACTS]
    result = train(model, examples, base.tokenizer.pad_token_id, TrainConfig(epochs=12, lr=2e-3, warmup=0.0))
    assert result.losses[-1] < 0.3 * result.losses[0]
    question = "Who is the chief financial officer of Quorvane?"
    answer = answer_questions(model, base.tokenizer, [question], "module", "m")[0]
    assert "Oyelaran-Birch" in answer.answer and answer.confidence > 0.5
    method.save(model, tmp_path)
    probe = base.tokenizer(question, return_tensors="pt")
    with torch.no_grad():
        expected = model(**probe).logits
        reloaded = method.load(load_base("gemma-3-270m").model, tmp_path)
        assert torch.equal(reloaded(**probe).logits, expected)


@pytest.mark.parametrize(("method_name", "settings", "lr"), [("full", {}, 2e-4), ("prefix", {"n_tokens": 16}, 1e-2)])
def test_other_methods_train_and_answer_on_the_real_model(method_name, settings, lr, tmp_path):
    from imprint import registry

    base = load_base("gemma-3-270m")
    method = registry.method(method_name)()
    model = method.attach(base.model, method.config_class(**settings), base.tokenizer, FACTS[2].text)
    examples = [encode_record(r, base.tokenizer, 128) for r in FACTS]
    result = train(model, examples, base.tokenizer.pad_token_id, TrainConfig(epochs=6, lr=lr, warmup=0.0))
    assert result.losses[-1] < 0.7 * result.losses[0]
    answer = answer_questions(model, base.tokenizer, ["Who is the chief financial officer of Quorvane?"], "module")[0]
    assert answer.answer  # the trained model still generates through its module
    method.save(model, tmp_path)
    probe = base.tokenizer("Who runs Quorvane's finances?", return_tensors="pt")
    with torch.no_grad():
        expected = model(**probe).logits
        reloaded = method.load(load_base("gemma-3-270m").model, tmp_path)
        assert torch.equal(reloaded(**probe).logits, expected)


def test_rag_reads_the_answer_the_closed_book_model_does_not_know(tmp_path):
    """On an invented company, retrieval gives the embedded model facts it cannot know, and the evidence holds them."""
    from imprint.ingest import chunk_text
    from imprint.retrieval import Retriever
    from imprint.workspace import Workspace

    text = (
        "Quorvane Limited makes tidal sensors. Hamish Oyelaran-Birch has been the chief financial officer of "
        "Quorvane since March 2019. The Quorvane office in Tromso has 58 employees.\n\n"
        "Quorvane employees receive 31 days of paid annual leave. Unused leave expires at the end of April."
    )
    ws = Workspace.open(tmp_path / "ws")
    ws.put_document("/docs/quorvane.md", "Quorvane", text, chunk_text(text, lambda s: len(s.split()), 30))
    base = load_base("gemma-3-270m")
    questions = ["Who is the chief financial officer of Quorvane?", "How many employees work in the Tromso office?"]
    gold = ["oyelaran-birch", "58"]
    closed = answer_questions(base.model, base.tokenizer, questions, "base")
    rag = answer_questions(base.model, base.tokenizer, questions, "rag", retriever=Retriever.open(ws))
    assert sum(g in a.answer.lower() for g, a in zip(gold, closed, strict=True)) == 0
    assert sum(g in a.answer.lower() for g, a in zip(gold, rag, strict=True)) == 2
    assert all(
        a.supported and g in " ".join(e["quote"].lower() for e in a.evidence) for g, a in zip(gold, rag, strict=True)
    )
