"""Deterministic stand-ins shipped as real code: a tiny random model of the real architecture, for tests.

`tiny_lm()` builds a 2-layer Gemma-3 from a config with a fixed seed (no download, ~1 s), and
`tiny_tokenizer()` is a byte-level tokenizer (256 byte tokens + specials, no merges) that needs no training
data, so the pair is identical on every machine and any text round-trips.
"""

from __future__ import annotations

import torch

_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    vocab.update({ch: len(_SPECIALS) + i for i, ch in enumerate(alphabet)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    tok.add_bos_token = True
    from tokenizers.processors import TemplateProcessing

    core.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    tok._tokenizer.post_processor = core.post_processor  # noqa: SLF001 - keep the fast tokenizer's own copy in step
    return tok


def tiny_config(vocab_size: int):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        # Tied embeddings at the default 0.02 scale cap the logits near uniform after the final RMSNorm, so an
        # adapter could barely move the loss; a wider init gives the tiny model a usable output range.
        initializer_range=0.3,
    )


def tiny_lm(seed: int = 0):
    """Return (model, tokenizer): a random 2-layer Gemma-3 (~60k parameters) and its byte tokenizer."""
    from transformers import Gemma3ForCausalLM

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(tiny_config(len(tokenizer)))
    model.eval()
    return model, tokenizer


def document(doc_id: str, title: str, text: str):
    """A real workspace `Document` record (version 1, active) for tests of stages that read documents."""
    import hashlib

    from imprint.workspace import Document

    sha = hashlib.sha256(text.encode()).hexdigest()
    return Document(doc_id, f"/docs/{doc_id}", 1, sha, title, text, "active", "2026-01-01T00:00:00Z")
