"""`name@version`: the one parser of module references, shared by the command line, the workspace and the server.

A module is named `name` (its current version) or `name@N`. Names become directory names, so they are ASCII
letters, digits, '.', '_' and '-' (not starting with '.', no '..'); versions are ASCII digits only, from 1 to
`MAX_VERSION`. `str.isdigit()` alone is not enough: '²', '①' and '١' are digits to Python, `int('²')` raises and
`int('١')` is 1, so `name@١` silently named version 1; every reference is read here instead, and a bad one is
a `BadModuleRef` (a `ValueError`) whose message says what is wrong, for the caller to turn into its own error.

This module imports nothing from the rest of imprint, so any layer may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # also the workspace's rule for collection and dataset names
MAX_NAME = 128
MAX_VERSION = 10**9  # far beyond any real lineage; keeps every version a small int (no 4300-digit parsing)
__all__ = ["MAX_VERSION", "NAME", "BadModuleRef", "ModuleRef", "parse", "valid_name"]


class BadModuleRef(ValueError):
    """A module reference that is not `name` or `name@N`."""


def valid_name(name: str) -> bool:
    """Whether `name` can name a module, dataset or collection (and so a directory inside the workspace)."""
    return isinstance(name, str) and bool(NAME.fullmatch(name)) and ".." not in name


@dataclass(frozen=True)
class ModuleRef:
    name: str
    version: int | None = None  # None: the module's current version

    @classmethod
    def parse(cls, text: str) -> ModuleRef:
        """`name` or `name@N` (ASCII digits, 1 <= N <= MAX_VERSION); anything else is a `BadModuleRef`."""
        if not isinstance(text, str) or not text:
            raise BadModuleRef("empty module name: use name or name@N")
        shown = repr(text[:60] + ("..." if len(text) > 60 else ""))
        name, at, version = text.partition("@")
        if len(name) > MAX_NAME or not valid_name(name):
            raise BadModuleRef(
                f"bad module name in {shown}: use letters, digits, '.', '_' or '-' (not starting with '.'), "
                "then optionally @N"
            )
        if not at:
            return cls(name)
        if not version or not (version.isascii() and version.isdigit()):
            raise BadModuleRef(f"bad module version in {shown}: use name@N with N a whole number from 1")
        number = int(version) if len(version) <= len(str(MAX_VERSION)) else MAX_VERSION + 1
        if not 1 <= number <= MAX_VERSION:
            digits = version if len(version) <= 40 else version[:40] + "..."
            raise BadModuleRef(f"no module {name}@{digits}: versions are whole numbers from 1 to {MAX_VERSION:,}")
        return cls(name, number)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def parse(text: str) -> ModuleRef:
    """`ModuleRef.parse`, as a function."""
    return ModuleRef.parse(text)
