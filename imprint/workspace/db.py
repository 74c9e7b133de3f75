"""The workspace: one SQLite file holding every document version, its chunks, and the dataset/module registries.

Why SQLite: a single file with transactions gives "all or nothing" for a multi-file ingest, survives crashes
(WAL), and needs no server. Documents are keyed by (doc_id, version) and never overwritten, so every synthetic
record and module can name the exact text it came from; removal is a tombstone, not a delete. Bulky artifacts
(synthetic records, adapter weights) live as files under the workspace root; the database only registers them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from imprint.errors import ImprintError, NotFoundError
from imprint.workspace.migrations import migrate

PutStatus = Literal["added", "updated", "unchanged", "restored"]
R = TypeVar("R")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Document:
    id: str
    uri: str
    version: int
    sha256: str
    title: str
    text: str
    status: str  # 'active' | 'deleted'
    added_at: str


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_id: str
    version: int
    ord: int
    text: str
    n_tokens: int


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: str
    n_records: int
    corpus_version: str
    manifest: dict
    created_at: str


@dataclass(frozen=True)
class ModuleEntry:
    name: str
    version: int
    method: str
    base_model: str
    path: str
    corpus_version: str
    manifest: dict
    created_at: str


def default_root() -> Path:
    """`$IMPRINT_HOME` when set, else `./.imprint` in the current directory."""
    home = os.environ.get("IMPRINT_HOME")
    return Path(home).expanduser() if home else Path.cwd() / ".imprint"


def doc_id_for(uri: str) -> str:
    """Stable id of a document: the same uri always maps to the same id, across versions."""
    return "d" + hashlib.sha1(uri.encode("utf-8")).hexdigest()[:10]


def chunk_id_for(doc_id: str, version: int, ord: int) -> str:
    return f"{doc_id}:v{version}:{ord}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(cls: type[R], row: sqlite3.Row) -> R:
    """Build a record from a row whose columns share the record's field names (`<x>_id` for `id`, JSON manifest)."""
    values = {}
    for f in fields(cls):
        if f.name == "id":
            values["id"] = row["doc_id" if cls is Document else "chunk_id"]
        elif f.name == "manifest":
            values["manifest"] = json.loads(row["manifest_json"])
        else:
            values[f.name] = row[f.name]
    return cls(**values)


class Workspace:
    """A workspace directory: `imprint.db` plus `data/<dataset>/` and `modules/<name>/<version>/`.

    Constructing one creates the directory and database if needed and applies pending migrations, so
    `Workspace(root)` and `Workspace.open(root)` are the same thing.
    """

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImprintError(
                f"cannot create workspace {self.root}: {exc.strerror}; pick another --workspace"
            ) from exc
        self.path = self.root / "imprint.db"
        # Autocommit mode: every write goes through `transaction()`, which issues BEGIN/COMMIT itself.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._depth = 0
        migrate(self.db)

    @classmethod
    def open(cls, root: Path | str | None = None) -> Workspace:
        return cls(Path(root) if root is not None else default_root())

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @contextmanager
    def transaction(self) -> Iterator[Workspace]:
        """All writes inside commit together or not at all.

        A nested use is a savepoint: if it fails, only its own writes are undone and the outer transaction
        decides. Writes are serialised across processes (BEGIN IMMEDIATE takes the write lock up front).
        """
        depth = self._depth
        self.db.execute(f"SAVEPOINT sp{depth}" if depth else "BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield self
        except BaseException:
            if self.db.in_transaction:  # SQLite may already have rolled back on its own (disk full, ...)
                self.db.execute(f"ROLLBACK TO sp{depth}" if depth else "ROLLBACK")
                if depth:
                    self.db.execute(f"RELEASE sp{depth}")
            raise
        else:
            self.db.execute(f"RELEASE sp{depth}" if depth else "COMMIT")
        finally:
            self._depth = depth

    # ---- documents and chunks -------------------------------------------------------------------------------

    def put_document(self, uri: str, title: str, text: str, chunks: list[tuple[str, int]]) -> tuple[Document, str]:
        """Store `text` as the newest version of `uri`; returns the stored document and what happened:
        "added" (new uri), "updated" (content changed: a new version), "unchanged" (nothing written) or
        "restored" (it had been removed; same content reactivates it, new content becomes a new version).
        """
        if not text.strip():
            raise ImprintError(f"{uri}: no text to store")
        if not chunks:
            raise ImprintError(f"{uri}: a document needs at least one chunk")
        doc_id = doc_id_for(uri)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self.transaction():
            latest = self._latest(doc_id)
            if latest is not None and latest.uri != uri:
                raise ImprintError(f"document id {doc_id} of {uri} collides with {latest.uri}; rename one of them")
            if latest is not None and latest.sha256 == sha:
                if latest.status == "active":
                    return latest, "unchanged"
                self.db.execute(
                    "UPDATE documents SET status = 'active' WHERE doc_id = ? AND version = ?", (doc_id, latest.version)
                )
                return self._latest(doc_id), "restored"
            version = 1 if latest is None else latest.version + 1
            self.db.execute(
                "INSERT INTO documents (doc_id, version, uri, sha256, title, text, status, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'active', ?)",
                (doc_id, version, uri, sha, title, text, _now()),
            )
            self.db.executemany(
                "INSERT INTO chunks (chunk_id, doc_id, version, ord, text, n_tokens) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (chunk_id_for(doc_id, version, i), doc_id, version, i, chunk_text, int(n_tokens))
                    for i, (chunk_text, n_tokens) in enumerate(chunks)
                ],
            )
            status = "added" if latest is None else "restored" if latest.status == "deleted" else "updated"
            return self._latest(doc_id), status

    def documents(self, include_deleted: bool = False) -> list[Document]:
        """The newest version of each document, ordered by uri."""
        where = "" if include_deleted else "WHERE status = 'active'"
        rows = self.db.execute(f"SELECT * FROM latest_documents {where} ORDER BY uri, doc_id")
        return [_record(Document, r) for r in rows]

    def get_document(self, doc_id_or_uri: str, version: int | None = None) -> Document:
        """A document by id, uri or file path (newest version unless `version`), removed ones included."""
        doc_id = self._resolve(doc_id_or_uri)
        if version is None:
            found = self._latest(doc_id)
        else:
            row = self.db.execute("SELECT * FROM documents WHERE doc_id = ? AND version = ?", (doc_id, version))
            found = next((_record(Document, r) for r in row), None)
        if found is None:
            raise NotFoundError(f"document {doc_id_or_uri} has no version {version}")
        return found

    def history(self, doc_id_or_uri: str) -> list[Document]:
        """Every stored version of a document, oldest first."""
        doc_id = self._resolve(doc_id_or_uri)
        rows = self.db.execute("SELECT * FROM documents WHERE doc_id = ? ORDER BY version", (doc_id,))
        return [_record(Document, r) for r in rows]

    def chunks(self, doc_ids: Iterable[str] | None = None) -> list[Chunk]:
        """Chunks of the newest version of active documents (optionally only `doc_ids`), by document then order."""
        sql = (
            "SELECT c.* FROM chunks c JOIN latest_documents d ON c.doc_id = d.doc_id AND c.version = d.version "
            "WHERE d.status = 'active'"
        )
        params: list[str] = []
        if doc_ids is not None:
            params = list(doc_ids)
            if not params:
                return []
            sql += f" AND c.doc_id IN ({', '.join('?' * len(params))})"
        rows = self.db.execute(sql + " ORDER BY d.uri, c.doc_id, c.ord", params)
        return [_record(Chunk, r) for r in rows]

    def version_chunks(self, doc_id: str, version: int) -> list[Chunk]:
        """Chunks of one stored version, current or historical."""
        rows = self.db.execute(
            "SELECT * FROM chunks WHERE doc_id = ? AND version = ? ORDER BY ord", (self._resolve(doc_id), version)
        )
        return [_record(Chunk, r) for r in rows]

    def remove_document(self, doc_id_or_uri: str) -> Document:
        """Tombstone a document: it leaves the corpus but its history stays. Removing twice is a no-op."""
        doc_id = self._resolve(doc_id_or_uri)
        with self.transaction():
            latest = self._latest(doc_id)
            if latest.status == "active":
                self.db.execute(
                    "UPDATE documents SET status = 'deleted' WHERE doc_id = ? AND version = ?", (doc_id, latest.version)
                )
            return self._latest(doc_id)

    def corpus_version(self) -> str:
        """Short hash of the active corpus: changes exactly when a document is added, changed or removed."""
        rows = self.db.execute(
            "SELECT doc_id, version, sha256 FROM latest_documents WHERE status = 'active' ORDER BY doc_id"
        )
        digest = hashlib.sha256("".join(f"{r[0]}:{r[1]}:{r[2]}\n" for r in rows).encode())
        return digest.hexdigest()[:12]

    def _latest(self, doc_id: str) -> Document | None:
        row = self.db.execute("SELECT * FROM latest_documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return _record(Document, row) if row else None

    def _resolve(self, key: str) -> str:
        """doc_id of a document named by id, exact uri, or a path that resolves to its uri."""
        candidates = [key, doc_id_for(key)]
        try:
            candidates.append(doc_id_for(str(Path(key).expanduser().resolve())))
        except (OSError, RuntimeError):
            pass
        for doc_id in candidates:
            if self.db.execute("SELECT 1 FROM documents WHERE doc_id = ? LIMIT 1", (doc_id,)).fetchone():
                return doc_id
        raise NotFoundError(f"no document {key!r} in {self.root}: `imprint docs` lists them")

    # ---- datasets and modules -------------------------------------------------------------------------------

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / _safe_name(name, "dataset")

    def module_dir(self, name: str, version: int) -> Path:
        return self.root / "modules" / _safe_name(name, "module") / str(int(version))

    def register_dataset(
        self, name: str, path: str, n_records: int, corpus_version: str, manifest: dict
    ) -> DatasetEntry:
        """Record a synthetic dataset; registering a name again replaces it (its files were rewritten)."""
        _safe_name(name, "dataset")
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO datasets (name, path, n_records, corpus_version, manifest_json, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, str(path), int(n_records), corpus_version, json.dumps(manifest, ensure_ascii=False), _now()),
            )
        return self.get_dataset(name)

    def datasets(self) -> list[DatasetEntry]:
        """All datasets, oldest first (the last one is the most recent)."""
        return [_record(DatasetEntry, r) for r in self.db.execute("SELECT * FROM datasets ORDER BY rowid")]

    def get_dataset(self, name: str) -> DatasetEntry:
        row = self.db.execute("SELECT * FROM datasets WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = ", ".join(d.name for d in self.datasets()) or "none yet: run `imprint synth`"
            raise NotFoundError(f"no dataset {name!r} (available: {names})")
        return _record(DatasetEntry, row)

    def register_module(
        self,
        name: str,
        version: int,
        method: str,
        base_model: str,
        path: str,
        corpus_version: str,
        manifest: dict,
    ) -> ModuleEntry:
        """Record a trained module version; versions are immutable, so registering one twice is an error."""
        _safe_name(name, "module")
        with self.transaction():
            try:
                self.db.execute(
                    "INSERT INTO modules (name, version, method, base_model, path, corpus_version, manifest_json, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        int(version),
                        method,
                        base_model,
                        str(path),
                        corpus_version,
                        json.dumps(manifest, ensure_ascii=False),
                        _now(),
                    ),
                )
            except sqlite3.IntegrityError:
                raise ImprintError(f"module {name}@{version} already exists; train under a new version") from None
        return self.get_module(name, version)

    def modules(self) -> list[ModuleEntry]:
        """All module versions, by name then version."""
        return [_record(ModuleEntry, r) for r in self.db.execute("SELECT * FROM modules ORDER BY name, version")]

    def get_module(self, name: str, version: int | None = None) -> ModuleEntry:
        """A module version; the newest one when `version` is None."""
        if version is None:
            row = self.db.execute(
                "SELECT * FROM modules WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            ).fetchone()
        else:
            row = self.db.execute("SELECT * FROM modules WHERE name = ? AND version = ?", (name, version)).fetchone()
        if row is None:
            available = ", ".join(f"{m.name}@{m.version}" for m in self.modules()) or "none yet: run `imprint train`"
            wanted = name if version is None else f"{name}@{version}"
            raise NotFoundError(f"no module {wanted!r} (available: {available})")
        return _record(ModuleEntry, row)

    def next_module_version(self, name: str) -> int:
        row = self.db.execute("SELECT MAX(version) FROM modules WHERE name = ?", (name,)).fetchone()
        return (row[0] or 0) + 1

    def counts(self) -> dict[str, int]:
        """Row count of each table: a cheap fingerprint to check that an operation wrote nothing."""
        tables = ("documents", "chunks", "datasets", "modules")
        return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def _safe_name(name: str, kind: str) -> str:
    """Names become directory names, so they may not climb out of the workspace or hide."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ImprintError(f"bad {kind} name {name!r}: use letters, digits, '.', '_' or '-' (not starting with '.')")
    return name
