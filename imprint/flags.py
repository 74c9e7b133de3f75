"""Numeric command-line flags, read and range-checked at the edge, before any verb opens the workspace.

Python's `int()` reads '١' (Arabic-Indic one) as 1 and `float()` reads 'nan'; argparse's `type=int` and
`type=float` pass both on, and a value out of range (a port of 99999, `--threads -1`, `calibrate --f1 2`) used to
fail late, as a traceback, or not at all (a calibration that turned every confidence to ~0.003). Here numbers
are ASCII and finite (`whole`, `number`: argparse types), and `check` holds every flag's range in one table; a
value outside it is one `ImprintError` line naming the flag, raised before anything is read or stored. Module
references (`--module`, `update NAME@N`, ...) are read there too, by `imprint.refs`.

`Parser` makes argparse's own errors (an unknown flag, a missing argument, a non-number) one line too.
"""

from __future__ import annotations

import argparse
import math
import re

from imprint import refs
from imprint.errors import ImprintError

_WHOLE = re.compile(r"[+-]?[0-9]{1,18}")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")


def whole(text: str) -> int:
    """An argparse type: a whole number written in ASCII digits."""
    if not _WHOLE.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (ASCII digits, e.g. 8)")
    return int(text)


def number(text: str) -> float:
    """An argparse type: a finite decimal number written in ASCII (no nan, no inf)."""
    if not _NUMBER.fullmatch(text.strip()) or not math.isfinite(value := float(text)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (e.g. 0.5)")
    return value


# dest: (lowest, highest, whether the lowest is allowed, what the flag is)
RANGES: dict[str, tuple[float, float, bool, str]] = {
    "k": (1, math.inf, True, "chunks to retrieve"),
    "port": (1, 65535, True, "TCP port"),
    "threads": (1, 4096, True, "torch CPU threads"),
    "max_loaded_mb": (0, math.inf, False, "memory budget for loaded modules"),
    "retain_limit": (1, math.inf, True, "items sampled from each retention eval set"),
    "retention_samples": (1, 100_000, True, "base-model samples for self-retention"),
    "lm_eval_limit": (1, math.inf, True, "items per lm-evaluation-harness task"),
    "generate_questions": (1, 100_000, True, "questions to generate"),
    "show": (0, math.inf, True, "sample records to print"),
    "f1": (0, 1, False, "token F1 at which an answer counts as right"),
    "max_abstain": (0, 1, True, "share of answerable questions it may abstain on"),
}


def _flag(dest: str) -> str:
    return "-k" if dest == "k" else "--" + dest.replace("_", "-")


def _describe(low: float, high: float, closed: bool) -> str:
    if high == math.inf:
        return f"at least {low:g}" if closed else f"above {low:g}"
    return f"in {'[' if closed else '('}{low:g}, {high:g}]"


MODULE_ARGS = ("module", "a", "b")  # every argument that names a module (`name` or `name@N`): refs.parse reads it


def check(args: argparse.Namespace) -> None:
    """Refuse any numeric flag outside its range (one line naming the flag), and any module reference that is not
    `name` or `name@N` (an empty `--module ''` included), before the verb starts."""
    for dest in MODULE_ARGS:
        value = getattr(args, dest, None)
        for text in value if isinstance(value, list) else [] if value is None else [value]:
            try:
                refs.parse(text)
            except refs.BadModuleRef as exc:
                raise ImprintError(str(exc)) from None
    for dest, (low, high, closed, what) in RANGES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if not (low <= value <= high if closed else low < value <= high):
            raise ImprintError(f"{_flag(dest)} must be {_describe(low, high, closed)} ({what}), got {value:g}")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`imprint: error: ...`, exit 2), like every other refusal of bad input."""

    def error(self, message: str):
        self.exit(2, f"imprint: error: {message} (see `{self.prog} --help`)\n")
