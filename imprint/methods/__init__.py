"""Ways of writing knowledge into a frozen base model. One folder per method, registered in `imprint.registry`.

A method is any object with this shape (a Protocol, not a base class): `attach` makes the trainable model,
`save` writes the module's files, `load` puts a saved module back on a base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class Method(Protocol):
    name: str

    def attach(self, model: torch.nn.Module, config) -> torch.nn.Module: ...

    def save(self, model: torch.nn.Module, directory: Path) -> list[str]: ...

    def load(self, model: torch.nn.Module, directory: Path) -> torch.nn.Module: ...
