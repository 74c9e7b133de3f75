"""The generation budget: `--tokens 500k` of generated text, shared by the documents in proportion to their size.

Tokens are counted with the base model's tokenizer (the unit training consumes) on what the generator wrote,
prompts excluded. Why proportional: a long handbook chapter holds more facts than a two-line memo, and an
even split would over-sample the memo into near-duplicates while leaving most of the chapter unread.
"""

from __future__ import annotations

import re

from imprint.errors import ConfigError

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_tokens(value) -> int | None:
    """'500k' -> 500000, '1.5M' -> 1500000, '20000' -> 20000; None stays None (no budget: `synth.rounds` passes)."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        tokens = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", str(value), re.ASCII)
        if not m:
            raise ConfigError(f"--tokens {value!r}: use a count like 20000, 500k or 1.5M")
        tokens = int(float(m.group(1)) * _SUFFIX[m.group(2).lower()])
    if tokens < 1:
        raise ConfigError(f"--tokens must be at least 1, not {value!r}")
    return tokens


def allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split `total` over the keys of `sizes` in proportion to their sizes (largest remainder: sums to `total`)."""
    weight = sum(max(0, s) for s in sizes.values())
    if not sizes:
        return {}
    if weight == 0:
        sizes, weight = {k: 1 for k in sizes}, len(sizes)
    exact = {k: total * max(0, s) / weight for k, s in sizes.items()}
    shares = {k: int(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    for k in sorted(exact, key=lambda k: (shares[k] - exact[k], k))[:left]:
        shares[k] += 1
    return shares
