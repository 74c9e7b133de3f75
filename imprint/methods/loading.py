"""The one way a saved module gets back onto a base model: alone (`load_module`) or beside others (`join`).

Both read the module's method from the registry and check its files first (`imprint.integrity`: a module with a
NaN is refused, never answered with or served). `load_module` is what answering, evaluation and `imprint diff`
use: a fresh base with the module on it. `join` is what serving uses: the module added to a shared `ModuleHost`
(`imprint.inference.modules`) by its method's own `join`, so the host and the server know no method by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from imprint import registry
from imprint.integrity import check_module_files
from imprint.models import load_base


class Loaded(NamedTuple):
    """A module loaded for answering: the base with the module on it, its tokenizer, and the module's manifest
    (as stored in `manifest.json`; `imprint.workspace.manifest.ModuleManifest.from_json` reads it typed)."""

    model: torch.nn.Module
    tokenizer: object
    manifest: dict


def load_module(ws, ref, dtype: torch.dtype | None = None) -> Loaded:
    """Load module `ref` (`name`, `name@version` or a `ModuleRef`) on a freshly loaded copy of its base model
    (in `dtype`, else the base's usual one: `imprint export` merges in float32)."""
    entry = ws.module(str(ref))
    directory, manifest = Path(entry.path), entry.manifest
    check_module_files(directory)  # a module with a NaN is refused, never answered with
    base = load_base(manifest["base_model"], dtype=dtype)
    model = registry.method(manifest["method"])().load(base.model, directory)
    return Loaded(model, base.tokenizer, manifest)


def serving_bytes(host, method: str, directory: Path) -> int:
    """Memory module files in `directory` of `method` will take once joined to `host`, known before joining (so a
    server makes room first, not after)."""
    return registry.method(method)().serving_bytes(Path(directory), host.base)


def join(host, key: str, method: str, directory: Path):
    """Join module `key` (files in `directory`) to `host` by its method's own `join`: an
    `imprint.inference.modules.Joined` saying where its rows run. A module with a NaN is refused."""
    directory = Path(directory)
    check_module_files(directory)
    return registry.method(method)().join(host, key, directory)
