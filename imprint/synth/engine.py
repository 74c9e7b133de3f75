"""The synthesis engine: runs a generator strategy over the corpus within a token budget, resumably, and gates it.

One loop, top to bottom:
1. each document gets a share of the `--tokens` budget in proportion to its size (`budget.py`); with no
   budget, every document gets `synth.rounds` passes of the strategy;
2. a wave takes, from every document with budget left, the next units of its queue (a strategy's units for
   the current round, dealt evenly over the chunks, then the follow-ups its completions asked for);
3. units already in the journal take their completion from it; the rest are generated in batches of equal
   settings, and every batch is journalled as soon as it returns (`journal.py`);
4. each completion is parsed into candidate records (and follow-up units), in wave order;
5. when no document has work or budget left, the candidates go through the quality gates (`gates.py`).
A killed run therefore resumes from the journal: the same waves replay from cached completions until the first
unit that was never finished, and the records are made again from the completions, never duplicated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from imprint.synth.budget import allocate
from imprint.synth.gates import GateConfig, GateReport, apply_gates
from imprint.synth.journal import Journal
from imprint.synth.records import SynthRecord
from imprint.synth.units import GenerationConfig, Unit, by_document


@dataclass
class _Document:
    doc: object
    chunks: list
    budget: int | None
    queue: deque = field(default_factory=deque)
    round: int = 0
    spent: int = 0
    spent_this_round: int = 0
    done: bool = False


@dataclass
class RunResult:
    records: list[SynthRecord]
    report: GateReport
    stats: dict


def unit_key(unit: Unit, generator_name: str, config: GenerationConfig) -> str:
    """Everything that decides a completion; a change to any of it makes a new unit, never a stale reuse."""
    identity = [
        generator_name,
        unit.step,
        unit.template_version,
        unit.prompt,
        unit.max_tokens,
        list(unit.stop),
        unit.sample,
        config.temperature,
        config.seed,
    ]
    return "u" + hashlib.sha1(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()[:16]


def spread(units: list[Unit]) -> list[Unit]:
    """Order a round's units so that any prefix covers the chunks evenly, each with varied prompts.

    A budget smaller than a round is spent on a prefix of the queue: in the strategy's order (chunk by chunk,
    every style of the first chunk first) it would never reach the last chunks. Here the units are dealt
    round-robin over their source chunks, and each chunk's own list is rotated by its position, so the first
    pass gives chunk 0 the first style, chunk 1 the second, and so on.
    """
    groups: dict[tuple, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.source_chunk_ids, []).append(u)
    lists = [g[i % len(g) :] + g[: i % len(g)] for i, g in enumerate(groups.values())]
    return [lst[j] for j in range(max(map(len, lists), default=0)) for lst in lists if j < len(lst)]


def _round_finished(state: _Document, config: GenerationConfig) -> bool:
    """Whether a document with an empty queue gets no further round."""
    if state.budget is None:
        return state.round >= config.rounds
    if state.spent >= state.budget or state.round >= config.max_rounds:
        return True
    return state.round > 0 and state.spent_this_round == 0  # a whole round wrote nothing: more would not either


def synthesize(
    strategy,
    generator,
    documents,
    chunks,
    journal: Journal,
    count_tokens,
    tokens: int | None = None,
    config: GenerationConfig | None = None,
    gates: GateConfig | None = None,
    progress=None,
) -> RunResult:
    """Run `strategy` with `generator`; `count_tokens(text)` counts generated tokens against the budget."""
    config = config or strategy.config
    t0 = time.perf_counter()
    docs = by_document(documents, chunks)
    budgets = allocate(tokens, {d.id: sum(c.n_tokens for c in cs) for d, cs in docs}) if tokens else {}
    states = [_Document(d, cs, budgets.get(d.id)) for d, cs in docs]
    by_id = {s.doc.id: s for s in states}
    stats: Counter = Counter()
    units_by_step: Counter = Counter()
    # a wave admits units until their expected length fills the budget: the mean completion of each prompt so
    # far (the whole max_tokens before the first one returns), so waves stay full when completions run short
    lengths: dict[str, list[int]] = defaultdict(list)
    expected: dict[str, float] = {}
    candidates: list[SynthRecord] = []
    used: set[str] = set()
    batch_size = max(1, int(getattr(generator, "batch_size", 8)))

    def report_progress():
        if progress:
            done = sum(s.spent for s in states) + stats["wave_tokens"]  # parsed, plus generated in this wave
            info = {"units": stats["units"], "cached": stats["units_cached"]}
            progress(min(done, tokens) if tokens else stats["units"], tokens or stats["units_planned"], info)

    while True:
        wave: list[Unit] = []
        for state in states:
            if state.done:
                continue
            if not state.queue:
                if _round_finished(state, config):
                    state.done = True
                    continue
                state.queue.extend(spread(strategy.units(state.doc, state.chunks, state.round)))
                stats["units_planned"] += len(state.queue)
                state.round += 1
                state.spent_this_round = 0
                if not state.queue:
                    state.done = True
                    continue
            committed = 0
            while state.queue and (state.budget is None or state.spent + committed < state.budget):
                unit = state.queue.popleft()
                wave.append(unit)
                committed += expected.get(unit.step, unit.max_tokens)
            if not committed and state.budget is not None:
                state.done = True  # budget spent: the rest of its queue is not generated
        if not wave:
            break
        keys = [unit_key(u, generator.name, config) for u in wave]
        _generate_missing(wave, keys, generator, journal, count_tokens, config, batch_size, stats, report_progress)
        for unit, key in zip(wave, keys, strict=True):
            entry = journal.get(key)
            used.add(key)
            state = by_id[unit.doc_id]
            state.spent += entry["n_tokens"]
            state.spent_this_round += entry["n_tokens"]
            stats["units"] += 1
            lengths[unit.step].append(max(1, entry["n_tokens"]))
            expected[unit.step] = sum(lengths[unit.step]) / len(lengths[unit.step])
            units_by_step[unit.step] += 1
            records, follow_ups = strategy.parse(unit, entry["completion"], entry["truncated"])
            if not records and not follow_ups:
                stats["units_unparsed"] += 1
            state.queue.extend(follow_ups)
            stats["units_planned"] += len(follow_ups)
            meta = {"template": unit.step, "template_version": unit.template_version, "unit": key}
            meta |= {"sample": unit.sample, "doc_id": unit.doc_id}
            for r in records:
                candidates.append(dataclasses.replace(r, generator=generator.name, meta={**r.meta, **meta}))
        stats["wave_tokens"] = 0
        report_progress()

    titles = {s.doc.id: s.doc.title for s in states}
    texts = {c.id: c.text for c in chunks}
    report = apply_gates(
        candidates,
        lambda r: "\n".join([titles.get(r.meta["doc_id"], "")] + [texts[c] for c in r.source_chunk_ids if c in texts]),
        gates,
        title_of=lambda r: titles.get(r.meta["doc_id"], ""),
    )
    journal.compact(used)
    wall = time.perf_counter() - t0
    stats.pop("wave_tokens", None)
    stats["tokens_generated"] = sum(s.spent for s in states)
    stats["wall_s"] = round(wall, 2)
    stats["tokens_per_s_new"] = round(stats["tokens_new"] / stats["generate_s"], 1) if stats["generate_s"] else None
    stats["generate_s"] = round(stats["generate_s"], 2)
    stats["rounds"] = max((s.round for s in states), default=0)
    stats["units_by_step"] = dict(sorted(units_by_step.items()))
    stats["by_document"] = {s.doc.id: {"budget": s.budget, "tokens": s.spent, "rounds": s.round} for s in states}
    return RunResult(report.kept, report, dict(stats))


def _generate_missing(wave, keys, generator, journal, count_tokens, config, batch_size, stats, report_progress):
    """Generate the wave's units the journal lacks, batch by batch, journalling each batch as it returns."""
    fresh: dict[str, Unit] = {}
    for unit, key in zip(wave, keys, strict=True):
        if journal.get(key) is None:
            fresh.setdefault(key, unit)
        else:
            stats["units_cached"] += 1
    groups: dict[tuple, list[str]] = {}
    for key, unit in fresh.items():
        groups.setdefault((unit.max_tokens, unit.stop), []).append(key)
    for (max_tokens, stop), group in groups.items():
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            seed = (int(batch[0][1:9], 16) + config.seed) % 2**31
            t0 = time.perf_counter()
            texts = generator.generate(
                [fresh[k].prompt for k in batch], max_tokens, config.temperature, list(stop), seed
            )
            stats["generate_s"] += time.perf_counter() - t0
            entries = []
            for key, text in zip(batch, texts, strict=True):
                n = count_tokens(text) if text else 0
                unit = fresh[key]
                entries.append(
                    {
                        "key": key,
                        "step": unit.step,
                        "doc_id": unit.doc_id,
                        "sample": unit.sample,
                        "completion": text,
                        "n_tokens": n,
                        "truncated": n >= 0.9 * max_tokens,
                        "generator": generator.name,
                    }
                )
                stats["tokens_new"] += n
                stats["wave_tokens"] += n
            journal.append(entries)
            stats["units_generated"] += len(batch)
            report_progress()
