"""No module with a NaN: finiteness checks for trained tensors, before a module is saved and when one is loaded.

A module of non-finite weights answers with garbage (or crashes sampling) and would be scored, served and
compared as if it were a real result; worse than none. Every method's tensors pass through here on the way to
and from disk, whatever the method, so the check needs no knowledge of how a method lays out its files. It imports
nothing of imprint but its errors, so every layer (training, inference, methods, serving) may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from imprint.errors import ImprintError


class NonFiniteModuleError(ImprintError):
    """A module's tensors hold NaN or infinite values."""


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors holding any NaN or infinite value."""
    out = []
    for name, tensor in named:
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor.detach()).all()):
                out.append(name)
    return out


def check_trained(model: torch.nn.Module, what: str) -> None:
    """Refuse to save `model` when a trainable parameter is not finite."""
    bad = nonfinite_tensors((n, p) for n, p in model.named_parameters() if p.requires_grad)
    if bad:
        raise NonFiniteModuleError(
            f"{what} was not saved: {len(bad)} trained tensor(s) hold NaN or inf (first: {bad[0]})"
        )


def check_module_files(directory: Path) -> None:
    """Refuse a module directory any of whose safetensors files holds a non-finite value."""
    from safetensors import safe_open

    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            bad = nonfinite_tensors((key, f.get_tensor(key)) for key in f.keys())  # noqa: SIM118 - not a dict
        if bad:
            raise NonFiniteModuleError(
                f"module {directory} is corrupt: {path.name} holds NaN or inf in {len(bad)} tensor(s) "
                f"(first: {bad[0]}); retrain it"
            )
