"""Replay against forgetting: general text mixed into training so the module does not overwrite what the base knew.

With no external data offline, the default replay set is the base model's own continuations of varied,
general prompts (sampled once per base model and cached): training on them pulls the adapted model back
towards the base distribution where the corpus says nothing. A user may point `train.replay_corpus` at their
own general text (a file or folder of .txt/.md/.html/.pdf) instead.

With `train.replay_distill` the replay records' target is the base model's own next-token distribution (its top
`DISTILL_TOP_K`, renormalised; imprint.train.teacher) rather than the one token the text has: the loss on them is
then a top-k estimate of KL(base || module) plus a constant, a lower-variance pull towards the base than the
sampled tokens alone (self-distillation, as in Cartridges' context distillation with an empty context).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from imprint.synth.records import SynthRecord

DISTILL_TOP_K = 32  # base-model tokens kept per replay position for `train.replay_distill`

PROMPTS = [
    "The history of the Roman Empire",
    "Photosynthesis is the process",
    "In mathematics, a prime number",
    "The recipe calls for",
    "Mount Everest is",
    "Water boils at",
    "The French Revolution began",
    "A computer program is",
    "The human heart",
    "Shakespeare wrote",
    "The capital of Japan",
    "Electricity is",
    "The first step in learning a language",
    "Jupiter is the largest",
    "The Amazon rainforest",
    "A good night's sleep",
    "The theory of evolution",
    "In economics, inflation",
    "The Great Wall of China",
    "Vaccines work by",
    "The Pacific Ocean",
    "A haiku is a form of",
    "The printing press",
    "Gravity is the force",
    "Question: What is the boiling point of water?\nAnswer:",
    "Question: Who painted the Mona Lisa?\nAnswer:",
    "Question: How many continents are there?\nAnswer:",
    "Question: What gas do plants absorb?\nAnswer:",
    "Dear Sir or Madam,",
    "Once upon a time",
    "The weather today",
    "def add(a, b):",
    "Chapter 1\n\n",
    "The Industrial Revolution",
    "DNA carries",
    "The Olympic Games",
    "Volcanoes form when",
    "The moon orbits",
    "Music theory describes",
    "A balanced diet includes",
]

# General prompts whose base-model samples training watches for drift (`train.forget_budget`): disjoint from
# PROMPTS (trained on) and from imprint.evaluate.forgetting.RETENTION_PROMPTS (graded), tested.
WATCH_PROMPTS = [
    "The Roman aqueducts",
    "Bees make honey by",
    "A triangle has",
    "The best way to store fresh herbs",
    "The Arctic tundra",
    "Sound travels",
    "The Renaissance in Italy",
    "A database index",
    "The human skeleton",
    "Jane Austen",
    "The capital of Canada",
    "Radioactivity was discovered",
    "Learning to ride a bicycle",
    "Mars has two moons",
    "The Mississippi River",
    "Drinking enough water",
    "Earthquakes happen when",
    "In accounting, a balance sheet",
    "The Colosseum in Rome",
    "The immune system",
    "The Indian Ocean",
    "A limerick is",
    "The telephone was invented",
    "Buoyancy is",
    "Question: What is the freezing point of water in Fahrenheit?\nAnswer:",
    "Question: Who discovered penicillin?\nAnswer:",
    "Question: How many sides does a hexagon have?\nAnswer:",
    "Question: What is the largest mammal?\nAnswer:",
    "Thank you for your letter of",
    "The old lighthouse keeper",
    "Interest rates rose",
    "while True:",
]


def self_replay_path(
    model_name: str, n_samples: int = 64, max_new_tokens: int = 96, seed: int = 0, prior: float = 0.0
) -> Path:
    """Where `self_replay` caches the pool these settings sample."""
    from imprint.models import cache_root

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_")[-80:]
    share = f"-p{prior:g}" if prior else ""  # no suffix: the pool of general prompts only, as before the setting
    return cache_root() / "replay" / f"{safe}-n{n_samples}-t{max_new_tokens}-s{seed}{share}.jsonl"


def replay_prompts(n_samples: int, prior: float) -> list[str]:
    """What sample i continues: "" (nothing but the start of text: a draw from the base's own prior) for a `prior`
    share of the samples, spread evenly, else the general prompts in turn."""
    prompts, n_general = [], 0
    for i in range(n_samples):
        if int((i + 1) * prior) > int(i * prior):
            prompts.append("")
        else:
            prompts.append(PROMPTS[n_general % len(PROMPTS)])
            n_general += 1
    return prompts


def self_replay(
    base, n_samples: int = 64, max_new_tokens: int = 96, seed: int = 0, prior: float = 0.0, progress=None
) -> list[SynthRecord]:
    """The base model's own samples (temperature 0.8, top-k 64, top-p 0.95; sample i drawn with seed + i), a `prior`
    share of them from nothing but the start of text and the rest continuing general prompts; cached per base
    model and settings. `progress(done, total)` follows the sampling."""
    from imprint.inference import Row, Sampling, generate, stop_token_ids

    if not 0 <= prior <= 1:
        raise ValueError(f"the prior share of replay samples must be in [0, 1], got {prior}")
    path = self_replay_path(base.name, n_samples, max_new_tokens, seed, prior)
    if path.exists():
        return [SynthRecord.from_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    tokenizer, model = base.tokenizer, base.model
    prompts = replay_prompts(n_samples, prior)
    start = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    stop_ids = stop_token_ids(tokenizer, model)
    rows = [Row(tokenizer(p).input_ids if p else start, Sampling(max_new_tokens, 0.8, 0.95, seed=seed + i, top_k=64),
                stop_ids) for i, p in enumerate(prompts)]  # fmt: skip
    generate(model, tokenizer, rows, progress=progress)
    records = [SynthRecord.make("replay", [], "text", generator=f"self:{base.name}", text=p + r.text)
               for p, r in zip(prompts, rows, strict=True) if (p + r.text).strip()]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return records


def corpus_replay(path: str | Path) -> list[SynthRecord]:
    """A user's general text as replay records, one per paragraph block of ~1,500 characters."""
    from imprint.ingest import collect_files, read_file

    files, _ = collect_files([Path(path)])
    records = []
    for file in files:
        _, text = read_file(file)
        block = ""
        for para in text.split("\n\n"):
            block = f"{block}\n\n{para}".strip()
            if len(block) >= 1500:
                records.append(SynthRecord.make("replay", [], "text", generator=f"file:{file.name}", text=block))
                block = ""
        if block:
            records.append(SynthRecord.make("replay", [], "text", generator=f"file:{file.name}", text=block))
    return records


def mix_replay(records: list[SynthRecord], pool: list[SynthRecord], fraction: float, seed: int) -> list[SynthRecord]:
    """Add replay records so they make up `fraction` of the result (sampled with repetition if the pool is small)."""
    if fraction <= 0 or not pool:
        return records
    n = round(len(records) * fraction / (1 - fraction))
    rng = random.Random(seed)
    picked = [pool[i % len(pool)] for i in rng.sample(range(max(n, len(pool))), n)] if n else []
    return records + picked
