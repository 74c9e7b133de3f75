"""Ingest: files and directories in, versioned documents and token-bounded chunks in the workspace out.

Why two phases: every file is read, validated and chunked before anything is written, and the writes then
happen in one transaction. So a bad file anywhere in a call (a typo in a path, a scanned PDF, a binary file
renamed .txt) leaves the workspace exactly as it was, and the error names the file to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imprint.errors import IngestError
from imprint.ingest.chunking import chunk_text, sentence_spans, split_sentences
from imprint.ingest.readers import SUPPORTED_SUFFIXES, is_supported, normalize_text, read_file

__all__ = [
    "SUPPORTED_SUFFIXES",
    "IngestReport",
    "chunk_text",
    "collect_files",
    "ingest_paths",
    "normalize_text",
    "read_file",
    "sentence_spans",
    "split_sentences",
]

Progress = Callable[[int, int, dict], None]


@dataclass
class IngestReport:
    """What one ingest call did, by uri: each file lands in exactly one of the first four lists."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files inside directories: hidden or unsupported type

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.restored)


def collect_files(paths: Iterable[Path | str]) -> tuple[list[Path], list[str]]:
    """(files to read, skipped paths). Named files are kept as given, so a bad one fails loudly in `read_file`;
    directories are walked recursively in sorted order, leaving out hidden entries and unsupported types."""
    files: list[Path] = []
    skipped: list[str] = []
    seen: set[Path] = set()

    def keep(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise IngestError(f"{path}: no such file or directory; check the path")
        if not path.is_dir():
            keep(path)
            continue
        found = 0
        for child in _walk(path, skipped):
            keep(child)
            found += 1
        if not found:
            raise IngestError(
                f"{path}: no files to add inside (supported: {' '.join(SUPPORTED_SUFFIXES)}); check the directory"
            )
    return files, skipped


def _walk(directory: Path, skipped: list[str]) -> Iterable[Path]:
    try:
        children = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise IngestError(f"{directory}: cannot be listed ({exc.strerror}); check its permissions") from exc
    for child in children:
        if child.name.startswith("."):
            skipped.append(str(child))
        elif child.is_dir():
            if child.is_symlink():
                skipped.append(str(child))  # a linked directory can loop back on itself
                continue
            yield from _walk(child, skipped)
        elif child.is_file() and is_supported(child):
            yield child
        else:
            skipped.append(str(child))


def ingest_paths(
    ws,
    paths: Iterable[Path | str],
    count_tokens: Callable[[str], int],
    max_tokens: int = 200,
    progress: Progress | None = None,
    collection: str = "default",
) -> IngestReport:
    """Read, chunk and store files and directories into `collection`; all or nothing. `count_tokens` sizes the
    chunks (any callable; the base model's tokenizer in the pipeline). `progress(done, total, info)` is called per
    file."""
    files, skipped = collect_files(paths)
    if not files:
        raise IngestError("no files given; pass files or directories to add")
    prepared: list[tuple[str, str, str, list[tuple[str, int]]]] = []
    failures: list[IngestError] = []
    for i, path in enumerate(files):
        try:
            title, text = read_file(path)
            prepared.append((str(path.resolve()), title, text, chunk_text(text, count_tokens, max_tokens)))
        except IngestError as exc:
            failures.append(exc)  # keep reading: one message can then name every bad file
        if progress:
            progress(i + 1, len(files), {"file": path.name})
    if failures:
        others = ", ".join(str(exc).split(": ", 1)[0] for exc in failures[1:])
        more = f" (nothing was added; {len(failures) - 1} more failed: {others})" if len(failures) > 1 else ""
        raise IngestError(f"{failures[0]}{more}") from failures[0]

    report = IngestReport(skipped=skipped)
    with ws.transaction():
        for uri, title, text, chunks in prepared:
            _, status = ws.put_document(uri, title, text, chunks, collection=collection)
            getattr(report, status).append(uri)
    return report
