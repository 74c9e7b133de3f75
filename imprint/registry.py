"""String registries with lazy imports: a name maps to a dotted path, imported only when chosen.

A new strategy or method is one folder plus one line here; heavy optional dependencies load only when used.
"""

from __future__ import annotations

import importlib

from imprint.errors import ConfigError

STRATEGIES: dict[str, str] = {
    "raw": "imprint.synth.raw:RawStrategy",
    "rules": "imprint.synth.rules:RulesStrategy",
    "prose": "imprint.synth.prose:ProseStrategy",
    "paraphrase": "imprint.synth.paraphrase:ParaphraseStrategy",
    "qa": "imprint.synth.qa:QAStrategy",
    "entigraph": "imprint.synth.entigraph:EntiGraphStrategy",
    "active-reading": "imprint.synth.active_reading:ActiveReadingStrategy",
}
# `imprint learn` / `imprint synth` without --strategy: measured best on real prose (bench/RESULTS.md "knowledge")
DEFAULT_STRATEGY = "prose"
METHODS: dict[str, str] = {
    "lora": "imprint.methods.lora.method:LoraMethod",
    "full": "imprint.methods.full.method:FullMethod",
    "prefix": "imprint.methods.prefix.method:PrefixMethod",
    "memory": "imprint.methods.memory.method:MemoryMethod",
}


def resolve(kind: str, table: dict[str, str], name: str):
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}: choose one of {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def strategy(name: str):
    return resolve("strategy", STRATEGIES, name)


def method(name: str):
    return resolve("method", METHODS, name)
