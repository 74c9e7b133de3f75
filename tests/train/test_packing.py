"""Packed rows compute exactly what the examples compute one by one: same logits, same loss, no leakage."""

import random

import pytest
import torch

from imprint.methods.prefix.config import PrefixMethodConfig
from imprint.methods.prefix.method import PrefixMethod
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_config, tiny_tokenizer
from imprint.train.data import IGNORE, collate, collate_packed, encode_record, pack_batches, pack_rows
from imprint.train.loss import causal_lm_loss, decoder_hidden

RECORDS = [
    SynthRecord.make("rules", [], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", [], "text", text="Priya Raman has served as chief financial officer since 2019."),
    SynthRecord.make("rules", [], "qa", question="How many leave days?", answer="27 days"),
    SynthRecord.make("rules", [], "text", text="Parental leave lasts 22 weeks."),
]


def small_window_lm(attn: str, window: int = 8):
    """The tiny Gemma-3 with a sliding window shorter than the examples, so packing must respect it too."""
    from transformers import Gemma3ForCausalLM

    tok = tiny_tokenizer()
    config = tiny_config(len(tok))
    config.sliding_window = window
    config._attn_implementation = attn
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval(), tok


def per_example_logits(model, hidden, batch, examples):
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = head or model.base.get_output_embeddings()
    out, at = [], 0
    for e in examples:
        out.append(head(hidden[0, at : at + len(e.input_ids)]))
        at += len(e.input_ids)
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_equals_examples_run_separately(attn):
    model, tok = small_window_lm(attn)
    examples = [encode_record(r, tok, 256) for r in RECORDS]
    batch = collate_packed([examples], tok.pad_token_id)
    assert "attention_mask" not in batch and batch["position_ids"][0, len(examples[0].input_ids)] == 0
    with torch.no_grad():
        packed = per_example_logits(model, decoder_hidden(model, batch), batch, examples)
        for e, logits in zip(examples, packed, strict=True):
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            torch.testing.assert_close(logits, alone, atol=2e-5, rtol=1e-4)
        # and the attention really is per example: a row without restarting positions differs
        leaky = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
        assert not torch.allclose(decoder_hidden(model, leaky), decoder_hidden(model, batch), atol=1e-3)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_behind_a_prefix_equal_examples_run_separately(attn):
    model, tok = small_window_lm(attn, window=24)
    prefixed = PrefixMethod().attach(model, PrefixMethodConfig(n_tokens=6), tok, "Priya Raman leads finance.")
    with torch.no_grad():
        for k in prefixed.keys:  # a prefix unlike the base's own KV, so mistakes show
            k.add_(torch.randn_like(k))
    examples = [encode_record(r, tok, 256) for r in RECORDS]
    batch = collate_packed([examples[:2], examples[2:]], tok.pad_token_id)
    with torch.no_grad():
        hidden = decoder_hidden(prefixed, batch)
        for row, group in enumerate([examples[:2], examples[2:]]):
            at = 0
            for e in group:
                n = len(e.input_ids)
                packed = model.get_output_embeddings()(hidden[row, at : at + n])
                alone = prefixed(input_ids=torch.tensor([e.input_ids])).logits[0]
                torch.testing.assert_close(packed, alone, atol=2e-5, rtol=1e-4)
                at += n


def test_packed_loss_equals_padded_loss_and_keeps_answer_only_labels():
    model, tok = small_window_lm("sdpa")
    examples = [encode_record(r, tok, 256) for r in RECORDS]
    packed = collate_packed([examples[:3], examples[3:]], tok.pad_token_id)
    padded = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        a, n_a = causal_lm_loss(model, packed)
        b, n_b = causal_lm_loss(model, padded)
    assert n_a == n_b == sum(e.n_trained for e in examples)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    trained = packed["labels"][0][packed["labels"][0] != IGNORE]
    assert tok.decode(trained[: len(" Priya Raman") + 1]) == " Priya Raman" + tok.eos_token
    assert packed["n_tokens"] == padded["n_tokens"] == sum(len(e.input_ids) for e in examples)


def test_pack_rows_places_every_example_once_within_the_width():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    rows = pack_rows(lengths, 128, random.Random(1))
    assert sorted(i for row in rows for i in row) == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) <= 1.05 * sum(lengths) / 128 + 1  # best-fit decreasing wastes little
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([10, 200], 128, rng)


def test_pack_batches_hold_every_token_once():
    tok = tiny_tokenizer()
    examples = [encode_record(r, tok, 64) for r in RECORDS * 5]
    batches = pack_batches(examples, 128, 64, tok.pad_token_id, random.Random(0))
    assert all(b["input_ids"].shape[0] <= 2 and b["input_ids"].shape[1] <= 64 for b in batches)
    assert sum(b["n_tokens"] for b in batches) == sum(len(e.input_ids) for e in examples)
    assert sum(int((b["labels"] != IGNORE).sum()) for b in batches) == sum(
        e.n_trained - (e.labels[0] != IGNORE) for e in examples
    )


def test_rows_widen_to_the_longest_example_rather_than_drop_it():
    tok = tiny_tokenizer()
    examples = [encode_record(r, tok, 64) for r in RECORDS * 3]
    longest = max(len(e.input_ids) for e in examples)
    batches = pack_batches(examples, 64, longest // 2, tok.pad_token_id, random.Random(0))
    assert max(b["input_ids"].shape[1] for b in batches) == longest
    assert sum(b["n_tokens"] for b in batches) == sum(len(e.input_ids) for e in examples)
