"""Memory layers: the model is unchanged until trained, a sparse step moves only the slots it selected (weights and
AdamW state alike), dense steps are plain AdamW, a skipped non-finite step touches nothing, and the held-in check
passes a memory module that learned. Save/load and the CLI are in the method matrix (test_methods.py)."""

import json
import random
import warnings

import pytest
import torch

from imprint.cli import main
from imprint.methods.memory.config import MemoryMethodConfig
from imprint.methods.memory.layer import memories_of
from imprint.methods.memory.method import MemoryMethod
from imprint.methods.memory.sparse import RowAdamW, select_slots, tfidf_scores
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record, pack_batches
from imprint.train.loop import NonFiniteStep, train
from imprint.train.loss import causal_lm_loss

RECORDS = [
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", ["d:v1:0"], "text", text="Priya Raman has served as chief financial officer."),
]
OTHER = [SynthRecord.make("rules", ["d:v1:1"], "text", text="The canteen opens at eight and closes at three.")]
SMALL = dict(n_keys=16, heads=2, knn=8, key_dim=16, background_texts=4)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))  # self-replay background samples land here


def attach(**settings):
    model, tok = tiny_lm()
    return MemoryMethod().attach(model, MemoryMethodConfig(**{**SMALL, **settings}), tok), tok


def batch_of(records, tok):
    return pack_batches([encode_record(r, tok, 128) for r in records], 512, 256, tok.pad_token_id, random.Random(0))[0]


def test_logits_are_identical_before_training():
    model, tok = attach()
    probe = torch.tensor([encode_record(RECORDS[0], tok, 128).input_ids])
    with torch.no_grad():
        assert torch.equal(model(input_ids=probe).logits, tiny_lm()[0](input_ids=probe).logits)
    memory = memories_of(model)[1]  # 'middle' of 2 layers
    assert memory.background_n == 4 and 0 < int((memory.background_df > 0).sum()) <= memory.n_slots
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["imprint_memory.1.values"]


def step(model, optimizer, batch):
    model.train()
    loss, _ = causal_lm_loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def test_a_sparse_step_moves_only_the_selected_slots_and_their_optimizer_state():
    model, tok = attach(top_t=6)
    memory = memories_of(model)[1]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = model.imprint_optimizer(params, TrainConfig(lr=0.1, weight_decay=0.1))
    step(model, optimizer, batch_of(RECORDS, tok))  # rows selected here now carry momentum
    first = torch.nonzero(optimizer.state[memory.values]["row_steps"]).flatten()
    before = {k: v.clone() for k, v in optimizer.state[memory.values].items()}
    weights = memory.values.detach().clone()

    model.train()
    loss, _ = causal_lm_loss(model, batch_of(OTHER, tok))
    loss.backward()
    read = memory.counts > 0
    selected = select_slots(memory, 6)
    optimizer.step()

    changed = torch.nonzero((memory.values != weights).any(1)).flatten()
    assert len(first) == 6 and len(selected) == 6 and int(read.sum()) > 6  # read slots were left out
    assert set(changed.tolist()) <= set(selected.tolist()) and len(changed) > 0
    untouched = torch.ones(memory.n_slots, dtype=torch.bool)
    untouched[selected] = False
    assert bool((untouched & read).any()) and bool(untouched[first].any())  # momentum and gradient, yet unmoved
    for key, value in optimizer.state[memory.values].items():
        assert torch.equal(value[untouched], before[key][untouched]), key
    assert torch.equal(memory.values[untouched], weights[untouched])
    scores = tfidf_scores(memory.counts, memory.background_df, float(memory.background_n))
    assert float(scores[selected].min()) >= float(scores[read & untouched].max())  # the top of TF-IDF


def test_dense_updates_are_plain_adamw():
    model, tok = attach(update="dense")
    memory = memories_of(model)[1]
    twin = torch.nn.Parameter(memory.values.detach().clone())
    optimizer = model.imprint_optimizer([memory.values], TrainConfig(lr=0.05, weight_decay=0.1))
    reference = torch.optim.AdamW([twin], lr=0.05, weight_decay=0.1)
    for records in (RECORDS, OTHER, RECORDS):
        model.train()
        loss, _ = causal_lm_loss(model, batch_of(records, tok))
        loss.backward()
        twin.grad = memory.values.grad.clone()
        optimizer.step(), reference.step()
        optimizer.zero_grad(), reference.zero_grad()
    assert torch.allclose(memory.values, twin, atol=1e-6) and bool((twin != 0).any())


def test_a_skipped_non_finite_step_changes_nothing():
    """Constant lr, one batch per step: a run whose step 2 is NaN (skipped) ends exactly as a clean 2-step run."""
    config = dict(lr=0.1, warmup=0.0, min_lr_ratio=1.0, batch_tokens=512)
    results = []
    for epochs, poison in ((3, {2}), (2, set())):
        model, tok = attach()
        state = {"step": 1}

        def nan_at(module, args, output, state=state, poison=poison):
            if state["step"] in poison:
                return (output[0] * float("nan"), *output[1:]) if isinstance(output, tuple) else output * float("nan")

        model.get_decoder().layers[0].register_forward_hook(nan_at)
        examples = [encode_record(r, tok, 128) for r in RECORDS]
        progress = lambda done, total, info, state=state: state.update(step=done + 1)  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteStep)
            result = train(model, examples, tok.pad_token_id, TrainConfig(epochs=epochs, **config), progress=progress)
        results.append((result, memories_of(model)[1].values.detach().clone()))
    (poisoned, weights), (clean, expected) = results
    assert poisoned.skipped_steps == [2] and clean.skipped_steps == []
    assert torch.equal(weights, expected) and bool((expected != 0).any())


def test_the_held_in_check_passes_a_memory_module_that_learned(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text("Priya Raman has served as chief financial officer since March 2019.")
    sets = ["train.epochs=30", "train.lr=1.0", "memory.n_keys=64", "memory.knn=8", "memory.background_texts=4"]
    args = ["learn", str(tmp_path / "a.md"), "--method", "memory", "--name", "m"]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    heldin = json.loads((tmp_path / "ws" / "modules" / "m" / "1" / "manifest.json").read_text())["heldin"]
    assert heldin["passed"] and heldin["module"]["f1"] >= heldin["base"]["f1"] + 0.05


def test_row_adamw_with_every_row_selected_matches_torch_on_a_plain_tensor():
    class Table(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.values = torch.nn.Parameter(torch.randn(5, 3))
            self.counts = torch.zeros(5)

    table = Table()
    twin = torch.nn.Parameter(table.values.detach().clone())
    mine, theirs = RowAdamW([table], lambda m: None, lr=0.01), torch.optim.AdamW([twin], lr=0.01, weight_decay=0.0)
    for seed in range(3):
        grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))
        table.values.grad, twin.grad = grad.clone(), grad.clone()
        mine.step(), theirs.step()
    assert torch.allclose(table.values, twin, atol=1e-7)
