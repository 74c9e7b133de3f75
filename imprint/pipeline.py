"""The stages as plain functions over a workspace: ingest -> synth -> train -> answer -> evaluate.

The CLI and the Python API both call these; each stage reads and writes typed records, so any stage can be
rerun or inspected on its own. Ids chain doc_id -> chunk_id -> synth record id -> module -> eval row.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from imprint import __version__, registry
from imprint.config import build, check_sections
from imprint.errors import ImprintError, TrainingError
from imprint.evaluate.heldin import HeldIn, describe
from imprint.integrity import check_module_files, check_trained
from imprint.models import DEFAULT_MODEL, load_base, load_tokenizer
from imprint.progress import Bar
from imprint.synth.records import read_forget, read_records, write_records
from imprint.train.config import TrainConfig
from imprint.workspace import trained_documents


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def add(ws, paths: list[str], model: str = DEFAULT_MODEL, max_tokens: int = 200, collection: str = "default"):
    """Ingest files and directories into `collection`; chunk sizes are counted with `model`'s tokenizer."""
    from imprint.ingest import ingest_paths

    tokenizer = load_tokenizer(model)
    return ingest_paths(
        ws,
        [Path(p) for p in paths],
        lambda s: len(tokenizer.encode(s, add_special_tokens=False)),
        max_tokens=max_tokens,
        collection=collection,
    )


def synth(
    ws,
    strategy: str = registry.DEFAULT_STRATEGY,
    name: str | None = None,
    overrides: dict | None = None,
    generator=None,
    tokens: int | str | None = None,
    model: str = DEFAULT_MODEL,
    collection: str = "default",
) -> dict:
    """Run a synthesis strategy over the current documents of `collection` and register the dataset.

    Generator strategies (paraphrase, qa, entigraph, active-reading) write with `generator`: "local" (the
    default: `model` in this process), "openai" (settings in the `generator` section), or any object with
    the `Generator` protocol. They spend `tokens` generated tokens ("500k"), shared by the documents by size
    (without a budget: `synth.rounds` passes), resume from `data/<name>/journal.jsonl` after an interruption,
    and keep only what passes the quality gates: the manifest's `gates` counts what was dropped and why, and
    `dropped.jsonl` lists every dropped record with its reason.
    """
    from imprint.synth.units import is_generative

    cls, config = resolve_synth_config(strategy, overrides)
    documents, chunks = ws.documents(collection=collection), ws.chunks(collection=collection)
    if not chunks:
        where = "the workspace has" if collection == "default" else f"collection {collection!r} has"
        raise ImprintError(f"{where} no documents: run `imprint add PATH` first")
    t0 = time.perf_counter()
    name = name or strategy
    directory = ws.data_dir(name)
    ws.check_name("dataset", name, collection)  # another collection's dataset is never overwritten
    extra: dict = {}
    if is_generative(cls):
        records, extra = _synth_with_generator(
            cls(config), directory, documents, chunks, generator, tokens, model, overrides
        )
    else:
        if generator not in (None, "none") or tokens:
            raise ImprintError(
                f"strategy {strategy} uses no generator: --generator and --tokens apply to "
                "paraphrase, qa, entigraph and active-reading"
            )
        records = cls(config).synthesize(documents, chunks)
    manifest = {
        "name": name,
        "strategy": strategy,
        "config": dataclasses.asdict(config) if config else {},
        "collection": collection,
        "corpus_version": ws.corpus_version(collection),
        "n_records": len(records),
        "by_kind": {k: sum(r.kind == k for r in records) for k in ("text", "qa")},
        "source_chunks": len(chunks),
        **extra,
        "wall_s": round(time.perf_counter() - t0, 2),
        "created_at": now(),
        "imprint_version": __version__,
    }
    write_records(directory, records, manifest)
    ws.register_dataset(name, str(directory), len(records), manifest["corpus_version"], manifest, collection)
    return manifest


def resolve_train_configs(method: str, overrides: dict | None = None):
    """Validate method and training settings up front, so a typo fails before any slow work starts."""
    overrides = overrides or {}
    check_sections(overrides, {"train", method})
    method_impl = registry.method(method)()
    method_config = build(method_impl.config_class, method, overrides.get(method, {}))
    train_values = dict(overrides.get("train", {}))
    train_values.setdefault("lr", getattr(method_impl, "default_lr", TrainConfig.lr))  # methods differ by 100x
    train_config = build(TrainConfig, "train", train_values)
    if train_config.compile != "off" and train_config.compile_backend not in ("inductor", "eager", "aot_eager"):
        import torch._dynamo

        if train_config.compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
            known = ", ".join(torch._dynamo.list_backends())
            raise ImprintError(f"unknown train.compile_backend {train_config.compile_backend!r}: use one of {known}")
    if train_config.replay_corpus and not Path(train_config.replay_corpus).exists():
        raise ImprintError(f"replay corpus {train_config.replay_corpus} does not exist")
    if train_config.log:
        from imprint.train.tracking import check_available

        check_available(train_config.log)
    return method_impl, method_config, train_config


def _synth_with_generator(strategy, directory: Path, documents, chunks, generator, tokens, model, overrides):
    """The generator path of `synth`: budget, journal, progress bar and gates; returns (records, manifest extras)."""
    from imprint.synth.budget import parse_tokens
    from imprint.synth.engine import synthesize
    from imprint.synth.generators import make_generator
    from imprint.synth.journal import Journal

    generator_config, gate_config = resolve_generation_configs(overrides)
    budget = parse_tokens(tokens)
    if generator == "none":
        raise ImprintError(f"strategy {strategy.name} needs a generator: --generator local or --generator openai")
    if generator is None or isinstance(generator, str):
        generator = make_generator(generator or "local", generator_config, default_model=model)
    tokenizer = load_tokenizer(model)
    journal = Journal(directory / "journal.jsonl")
    with Bar(f"synth {strategy.name}", unit="tokens" if budget else "units") as bar:
        result = synthesize(
            strategy,
            generator,
            documents,
            chunks,
            journal,
            lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
            tokens=budget,
            config=strategy.config,
            gates=gate_config,
            progress=lambda done, total, info: bar.update(done, total, **info),
        )
    directory.mkdir(parents=True, exist_ok=True)
    dropped = "".join(
        json.dumps({"reason": reason, "detail": detail, "record": json.loads(r.to_json())}, ensure_ascii=False) + "\n"
        for r, reason, detail in result.report.dropped
    )
    (directory / "dropped.jsonl.tmp").write_text(dropped, encoding="utf-8")
    (directory / "dropped.jsonl.tmp").replace(directory / "dropped.jsonl")
    extra = {
        "generator": generator.name,
        "generator_config": dataclasses.asdict(generator.config) if hasattr(generator, "config") else {},
        "tokens_budget": budget,
        "tokens_generated": result.stats["tokens_generated"],
        "gates": result.report.summary(),
        "gate_config": dataclasses.asdict(gate_config),
        "templates": strategy.templates.versions(),
        "run": result.stats,
    }
    return result.records, extra


def resolve_generation_configs(overrides: dict | None = None):
    """The `generator` and `gates` sections of the synth settings, validated."""
    from imprint.synth.gates import GateConfig
    from imprint.synth.generators import GeneratorConfig

    overrides = overrides or {}
    return (
        build(GeneratorConfig, "generator", overrides.get("generator", {})),
        build(GateConfig, "gates", overrides.get("gates", {})),
    )


def resolve_synth_config(strategy: str, overrides: dict | None = None):
    """Validate the strategy and its settings (`synth`, and `generator` and `gates` for generator strategies)."""
    from imprint.synth.units import is_generative

    overrides = overrides or {}
    check_sections(overrides, {"synth", "generator", "gates"})
    if not is_generative(registry.strategy(strategy)) and (overrides.get("generator") or overrides.get("gates")):
        raise ImprintError(f"strategy {strategy} uses no generator: generator.* and gates.* settings do not apply")
    resolve_generation_configs(overrides)
    cls = registry.strategy(strategy)
    config_cls = getattr(cls, "config_class", None)
    if config_cls is None and overrides.get("synth"):
        raise ImprintError(f"strategy {strategy} takes no settings")
    return cls, build(config_cls, "synth", overrides.get("synth", {})) if config_cls else None


def forgetting_watch(base, config):
    """`drift(model)`: ΔNLL of `model` against the base on the base's samples of held-out general prompts.

    The base is scored now, so call this before a module is attached to it."""
    from imprint.evaluate.forgetting import retention_samples, score_samples
    from imprint.train.replay import WATCH_PROMPTS

    samples = retention_samples(base, config.forget_samples, 48, seed=4321, prompts=WATCH_PROMPTS, kind="watch")
    reference = score_samples(base.model, samples)["nll"]
    return lambda model: score_samples(model, samples)["nll"] - reference


def train_module(
    ws,
    datasets: list[str],
    name: str,
    method: str = "lora",
    model: str = DEFAULT_MODEL,
    overrides: dict | None = None,
    resume: bool = False,
    start_from=None,
    extra: dict | None = None,
    verify_on: list[str] | None = None,
) -> dict:
    """Train a module of `method` on the named datasets and register it as the next version of `name`.

    Progress is checkpointed under `runs/<name>/`; `resume=True` continues an interrupted run from there.
    `start_from` (a `ModuleEntry` of the same method) starts from that version's weights instead of a fresh
    module, with its method settings; it becomes the new version's `parent`. `extra` goes into the manifest.
    The held-in check samples the corpus records (only those whose ids are in `verify_on`, when given: an update's
    new records) and compares the module with the base, or with `start_from` when given (see `evaluate/heldin.py`).
    """
    from imprint.train.data import encode_record
    from imprint.train.loop import train

    method_impl, method_config, train_config = resolve_train_configs(method, overrides)
    collection = dataset_collection(ws, datasets)
    ws.check_name("module", name, collection)  # before any checkpoint under runs/<name>/ is written
    records, forget = [], []
    for dataset in datasets:
        entry = ws.get_dataset(dataset)
        directory = Path(entry["path"]) if isinstance(entry, dict) else Path(entry.path)
        records.extend(read_records(directory))
        forget.extend(read_forget(directory))  # `imprint update`: what left the corpus, trained towards the base
    if not records:
        raise ImprintError(f"datasets {', '.join(datasets)} hold no records")
    base = load_base(model)
    n_corpus_records = len(records)
    if train_config.read > 0:
        from imprint.retrieval import Retriever
        from imprint.train.reading import reading_records

        retriever = Retriever.open(ws, collection=collection)
        try:
            reading = reading_records(records, retriever, train_config.read, train_config.read_k, train_config.seed)
        finally:
            retriever.close()
        records = records + reading
    n_reading_records = len(records) - n_corpus_records
    if train_config.replay > 0:
        from imprint.train.replay import corpus_replay, mix_replay, self_replay, self_replay_path

        if train_config.replay_corpus:
            pool = corpus_replay(train_config.replay_corpus)
        else:
            settings = (train_config.replay_pool, 96, train_config.seed, train_config.replay_prior)
            if self_replay_path(base.name, *settings).exists():
                pool = self_replay(base, *settings)
            else:  # once per base model and settings, then cached
                with Bar("base samples for replay", unit="samples") as bar:
                    pool = self_replay(base, *settings, progress=lambda d, t: bar.update(d, t))
        if not pool:  # never train on without the replay that was asked for
            source = train_config.replay_corpus or f"the base model's samples ({base.name} wrote no text)"
            raise ImprintError(f"train.replay={train_config.replay} but the replay pool is empty: {source}")
        records = mix_replay(records, pool, train_config.replay, train_config.seed)
    n_before_forget = len(records)
    records = records + forget
    examples = [encode_record(r, base.tokenizer, train_config.max_len) for r in records]
    distill_replay = bool(train_config.replay and train_config.replay_distill)
    if distill_replay or forget:
        # the base's own next-token distribution on the replay and forget records, before any change
        from imprint.train.replay import DISTILL_TOP_K
        from imprint.train.teacher import teacher_targets, towards_teacher

        bos = [base.tokenizer.bos_token_id] if base.tokenizer.bos_token_id is not None else []
        first = n_corpus_records + n_reading_records if distill_replay else n_before_forget
        with Bar("base targets", unit="batches") as bar:
            examples = teacher_targets(
                base.model, base.tokenizer, examples, dict.fromkeys(range(first, len(examples)), bos), DISTILL_TOP_K,
                ws.root / "runs" / name, progress=lambda d, t: bar.update(d, t),
            )  # fmt: skip
        # forget records never train towards their own text: their labels become the base's most likely tokens too
        examples[n_before_forget:] = [towards_teacher(e) for e in examples[n_before_forget:]]
    pool = records[:n_corpus_records]
    if verify_on is not None:  # an update: only what is new in this version can show it learned anything
        wanted = set(verify_on)
        pool = [r for r in pool if r.id in wanted]
    heldin = HeldIn.sample(pool, train_config.verify_n, train_config.seed) if train_config.verify else None
    # the reference: the base before any weight changes, or an update's parent once its weights are loaded below
    reference = heldin.score(base.model, base.tokenizer) if heldin and start_from is None else None
    drift = forgetting_watch(base, train_config) if train_config.forget_budget else None  # the same
    torch.manual_seed(train_config.seed)  # adapter initialisation is part of the run: seed it like the rest
    if start_from is not None:
        parent_config = start_from.manifest.get("config", {}).get(method, {})
        method_config = build(method_impl.config_class, method, parent_config)
        check_module_files(Path(start_from.path))
        trainable = method_impl.load(base.model, Path(start_from.path), trainable=True)
        if heldin:  # the parent's own answers, before the first step
            reference = heldin.score(trainable, base.tokenizer)
    else:
        corpus_text = "\n\n".join(c.text for c in ws.chunks(collection=collection))
        trainable = method_impl.attach(base.model, method_config, tokenizer=base.tokenizer, corpus_text=corpus_text)
    checkpoint = ws.root / "runs" / name / "checkpoint.pt"
    if getattr(trainable, "distill", 0):  # context distillation: the method's teacher reads each record's sources
        texts = {c.id: c.text for c in ws.chunks(collection=collection)}
        sources = [[texts[c] for c in r.source_chunk_ids if c in texts] for r in records]
        with Bar("teacher", unit="batches") as bar:
            examples = method_impl.prepare_examples(
                trainable, examples, base.tokenizer, sources, checkpoint.parent, lambda d, t: bar.update(d, t)
            )
    # the loss's weight on teacher targets: the method's own (prefix context distillation), else replay_distill's
    distill = getattr(trainable, "distill", 0.0) or (train_config.replay_distill if distill_replay or forget else 0.0)
    with Bar("train", unit="steps") as bar:
        result = train(
            trainable,
            examples,
            base.tokenizer.pad_token_id,
            train_config,
            progress=lambda done, total, info: bar.update(done, total, **info),
            checkpoint=checkpoint,
            resume=resume,
            drift=drift,
            distill=distill,
        )
    check_trained(trainable, f"module {name}")  # the loop skips non-finite steps; never save what slipped past
    parent = f"{start_from.name}@{start_from.version}" if start_from is not None else None
    verdict = heldin.verdict(reference, heldin.score(trainable, base.tokenizer), parent) if heldin else None
    version = ws.next_module_version(name)
    directory = ws.module_dir(name, version)
    if verdict and not verdict["passed"]:
        directory = ws.root / "runs" / name / "failed"  # kept for inspection, never registered or served
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    files = method_impl.save(trainable, directory)
    manifest = {
        "name": name,
        "version": version,
        "method": method,
        "base_model": base.name,
        "collection": collection,
        "corpus_version": ws.corpus_version(collection),
        "parent": start_from.version if start_from is not None else None,
        "documents": trained_documents(c for r in records[:n_corpus_records] for c in r.source_chunk_ids),
        "datasets": datasets,
        "n_records": n_corpus_records,
        "n_reading_records": n_reading_records,
        "n_replay_records": n_before_forget - n_corpus_records - n_reading_records,
        "n_forget_records": len(forget),
        "data_ids_sha": _ids_digest([r.id for r in records]),
        "config": {"train": dataclasses.asdict(train_config), method: dataclasses.asdict(method_config)},
        "metrics": result.summary(),
        "heldin": verdict,
        "files": files,
        "module_bytes": sum((directory / f).stat().st_size for f in files),
        **(extra or {}),
        "created_at": now(),
        "imprint_version": __version__,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if verdict and not verdict["passed"]:
        checkpoint.unlink(missing_ok=True)
        beyond = f" beyond {parent}" if parent else ""
        raise TrainingError(
            f"training failed: module {name} learned nothing measurable{beyond} ({describe(verdict)}); it was not "
            f"registered (files kept in {directory}). Try more epochs (train.epochs), a higher train.lr, or "
            "check the synthetic data (imprint synth --show 10)"
        )
    path, corpus, parent = str(directory), manifest["corpus_version"], manifest["parent"]
    ws.register_module(name, version, method, base.name, path, corpus, manifest, collection, parent_version=parent)
    checkpoint.unlink(missing_ok=True)  # the module is saved: the run is complete
    return manifest


def dataset_collection(ws, datasets: list[str]) -> str:
    """The one collection the datasets were made from: a module is trained on one collection's text only."""
    found = {ws.get_dataset(d).collection for d in datasets}
    if len(found) > 1:
        raise ImprintError(
            f"datasets {', '.join(datasets)} come from different collections ({', '.join(sorted(found))}): "
            "a module learns one collection; train one module per collection"
        )
    return found.pop() if found else "default"


def _ids_digest(ids: list[str]) -> str:
    import hashlib

    return hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:16]
