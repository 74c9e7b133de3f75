"""The five ways imprint answers a question, as one typed value: what each reads and which weights answer.

- `base`: the bare model, closed book (the prompt holds the question only).
- `icl`: the entire corpus in the prompt (its KV cache computed once and reused for every question).
- `rag`: the top-k retrieved chunks in the prompt.
- `module`: the base with a trained module, closed book: a right answer can only come from the weights.
- `module+rag`: a module and retrieved chunks together; it also answers closed book, to check the module's own
  answer against the passages (`conflict`).

Callers ask a mode what it needs (`uses_module`, `retrieves`, `in_context`), never compare its name.
"""

from __future__ import annotations

from enum import StrEnum

from imprint.errors import ImprintError


class Mode(StrEnum):
    BASE = "base"
    ICL = "icl"
    RAG = "rag"
    MODULE = "module"
    MODULE_RAG = "module+rag"

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        try:
            return cls(value)
        except ValueError:
            raise ImprintError(f"unknown mode {value!r}: choose one of {', '.join(MODES)}") from None

    @property
    def uses_module(self) -> bool:
        """Answered by a module's weights (the base's otherwise)."""
        return self in (Mode.MODULE, Mode.MODULE_RAG)

    @property
    def retrieves(self) -> bool:
        """Reads retrieved passages in its prompt."""
        return self in (Mode.RAG, Mode.MODULE_RAG)

    @property
    def in_context(self) -> bool:
        """Reads the whole corpus in its prompt."""
        return self is Mode.ICL

    @property
    def checks_conflict(self) -> bool:
        """Also answers closed book, to check the module's own answer against the passages."""
        return self is Mode.MODULE_RAG

    def calibration_key(self, module: str | None = None) -> str:
        """The key a calibration is stored under: the mode, plus the module (`name@version`) for module modes."""
        return f"{self.value}:{module}" if module and self.uses_module else self.value


MODES: tuple[str, ...] = tuple(m.value for m in Mode)
RETRIEVAL_MODES: tuple[str, ...] = tuple(m.value for m in Mode if m.retrieves)
