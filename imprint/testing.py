"""Deterministic stand-ins shipped as real code: a tiny random model of the real architecture, for tests.

`tiny_lm()` builds a 2-layer Gemma-3 from a config with a fixed seed (no download, ~1 s), and
`tiny_tokenizer()` is a byte-level tokenizer (256 byte tokens + specials, no merges) that needs no training
data, so the pair is identical on every machine and any text round-trips.

The random model greedily writes filler (`::::`) for every question, and so does a module trained for a few steps
at the real defaults: a test that compares two of them cannot tell them apart. `teach()` trains a module through
the real pipeline until it answers its own facts (a few seconds per module), so base, modules and versions write
different text and a test that mixed them up fails.
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


# How long, and how hard, each method trains on the tiny model before it answers a handful of facts word for word.
# The random model is confidently wrong (first loss ~14 nats: `initializer_range=0.3`), so every method needs a
# learning rate 5-100x its real default; `prefix` also needs a cache of 64 positions started from the corpus's KV.
# Measured: each module then answers three facts word for word after 1-5 s of training on one thread, the right
# token ahead of the next by 0.7 logits or more (prefix: the least; LoRA, full and memory 3-6).
TINY_RECIPES: dict[str, dict] = {
    "lora": {"train": {"lr": 2e-2, "epochs": 100}},
    "full": {"train": {"lr": 3e-3, "epochs": 100}},
    "prefix": {"train": {"lr": 0.3, "epochs": 300}, "prefix": {"n_tokens": 64, "init": "corpus"}},
    "memory": {"train": {"lr": 0.5, "epochs": 100}},
}


def teach(ws, name: str, method: str, facts: dict[str, str], texts: tuple[str, ...] = (), settings: dict | None = None,
          start_from=None, collection: str = "default", train: dict | None = None) -> dict:  # fmt: skip
    """Train `name` (its next version) with `method` on the tiny model until it answers `facts` (question -> answer)
    and continues `texts`, through `imprint.pipeline.train_module` with the held-in check on; returns its manifest.

    The records are written as a dataset `<name>-v<version>` of `collection` (its documents must exist: the records
    cite its first chunk). `settings` are the method's own (`{"r": 4}` for lora) and `train` the training ones
    (`{"read": 1.0}`: every fact also open book, as module+rag asks), on top of `TINY_RECIPES`; `start_from` (a
    `ModuleEntry`) trains an update of that version."""
    from imprint import pipeline
    from imprint.synth.records import SynthRecord, write_records

    chunk = ws.chunks(collection=collection)[0].id
    records = [SynthRecord.make("toy", [chunk], "qa", question=q, answer=a) for q, a in facts.items()]
    records += [SynthRecord.make("toy", [chunk], "text", text=t) for t in texts]
    dataset = f"{name}-v{ws.next_module_version(name)}"
    directory = ws.data_dir(dataset)
    corpus = ws.corpus_version(collection)
    manifest = {"name": dataset, "strategy": "toy", "collection": collection, "corpus_version": corpus,
                "n_records": len(records)}  # fmt: skip
    write_records(directory, records, manifest)
    ws.register_dataset(dataset, str(directory), len(records), corpus, manifest, collection)
    recipe = TINY_RECIPES[method]
    # one thread whatever the core count (the same weights on any number of cores), and tiny steps gain nothing from
    # two threads (on a shared 2-core machine they wait on each other); the caller's thread count is restored after
    settled = {**recipe["train"], "checkpoint_every": 0, "replay": 0, "read": 0, "warmup": 0.0, **(train or {})}
    overrides = {"train": {**settled, "threads": 1}, method: {**recipe.get(method, {}), **(settings or {})}}
    threads = torch.get_num_threads()
    try:
        return pipeline.train_module(ws, [dataset], name, method, model="tiny", overrides=overrides,
                                     start_from=start_from)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
