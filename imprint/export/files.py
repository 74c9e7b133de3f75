"""Writing an export directory all at once: staged beside its final place and renamed into it, so a failed export
leaves nothing half-written, and an existing non-empty directory is never overwritten."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imprint.errors import ImprintError


def check_out(out: Path | str) -> Path:
    """`out` as an absolute path, refused when it is a file or a non-empty directory."""
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImprintError(f"{out} already exists and is not an empty directory: choose a new --out")
    return out


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh directory beside `out`, renamed to `out` when the block ends without an error (else removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            out.rmdir()  # empty: `check_out` refused anything else
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_manifest(directory: Path, manifest: dict, **extra) -> None:
    """The module's manifest (lineage, training config, metrics) beside the exported weights, with how it was
    exported and the prompt format it answers in."""
    (directory / "imprint_module.json").write_text(json.dumps({**manifest, **extra}, indent=2))
