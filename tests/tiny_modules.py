"""Modules that learned, on the tiny model: `teach()` trains a module of any method through the real pipeline until it
answers its own facts, in a few seconds.

The random tiny model (`imprint.testing`) greedily writes filler (`::::`) for every question, and so does a module
trained for a few steps at the real defaults: a test that compares two of them cannot tell them apart. With modules
that answer their own facts, base, modules and versions write different text, and a test that mixed them up fails.
(A test helper, not `imprint.testing`: it runs the pipeline, a room `testing` may not import.)
"""

import torch

from imprint import pipeline
from imprint.synth.records import SynthRecord, write_records

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
