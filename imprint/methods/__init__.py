"""Ways of writing knowledge into a frozen base model. One folder per method, registered in `imprint.registry`.

A method is any object with this shape (a Protocol, not a base class): `attach` makes the trainable model
(it may use the tokenizer and the corpus text, e.g. to initialise a KV prefix from the corpus), `save` writes
the module's files, `load` puts a saved module back on a freshly loaded base model (`trainable=True`: with the
module's own parameters trainable again, so a new version can start from it, as `imprint update` does).
For serving, `join` puts a saved module beside others on one shared base (`imprint.inference.modules`: an
adapter in the shared model, a KV prefix per row, or a model of its own) and `serving_bytes` says what that
will cost before it is done; the server and the engine know no method by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class Method(Protocol):
    name: str

    config_class: type

    def attach(self, model: torch.nn.Module, config, tokenizer=None, corpus_text: str = "") -> torch.nn.Module: ...

    def save(self, model: torch.nn.Module, directory: Path) -> list[str]: ...

    def load(self, model: torch.nn.Module, directory: Path, trainable: bool = False) -> torch.nn.Module: ...

    def join(self, host, key: str, directory: Path): ...  # -> imprint.inference.modules.Joined

    def serving_bytes(self, directory: Path, base) -> int: ...
