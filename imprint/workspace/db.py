"""The workspace: one SQLite file holding every document version, its chunks, and the dataset/module registries.

Why SQLite: a single file with transactions gives "all or nothing" for a multi-file ingest, survives crashes
(WAL), and needs no server. Documents are keyed by (doc_id, version) and never overwritten, so every synthetic
record and module can name the exact text it came from; removal is a tombstone, not a delete. Bulky artifacts
(synthetic records, adapter weights) live as files under the workspace root; the database only registers them.

Every document, dataset and module belongs to a named collection (`default` unless told otherwise): the unit a
tenant owns. Collections are independent corpora in one file: the same file added to two collections is two
documents (its id depends on the collection), and each has its own corpus version.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from imprint import refs
from imprint.errors import ImprintError, NotFoundError, WorkspaceError
from imprint.workspace.migrations import migrate

PutStatus = Literal["added", "updated", "unchanged", "restored"]
R = TypeVar("R")
DEFAULT_COLLECTION = "default"
MAX_VERSION = refs.MAX_VERSION


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
    collection: str = DEFAULT_COLLECTION


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
    collection: str = DEFAULT_COLLECTION


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
    collection: str = DEFAULT_COLLECTION  # the collection its training data came from
    parent_version: int | None = None  # the version its weights started from (None: the base model)


def default_root() -> Path:
    """`$IMPRINT_HOME` when set, else `./.imprint` in the current directory."""
    home = os.environ.get("IMPRINT_HOME")
    return Path(home).expanduser() if home else Path.cwd() / ".imprint"


def doc_id_for(uri: str, collection: str = DEFAULT_COLLECTION) -> str:
    """Stable id of a document: the same uri in the same collection always maps to the same id, across versions
    (the default collection keeps the ids of workspaces made before collections existed)."""
    key = uri if collection == DEFAULT_COLLECTION else f"{collection}\0{uri}"
    return "d" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def chunk_id_for(doc_id: str, version: int, ord: int) -> str:
    return f"{doc_id}:v{version}:{ord}"


def trained_documents(chunk_ids: Iterable[str]) -> dict[str, int]:
    """{doc_id: version} of the documents that chunk ids (`chunk_id_for`) come from: what a training set was made of."""
    found: dict[str, int] = {}
    for chunk_id in chunk_ids:
        doc_id, version, _ = chunk_id.rsplit(":", 2)
        found[doc_id] = max(found.get(doc_id, 0), int(version.removeprefix("v")))
    return dict(sorted(found.items()))


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
        _check_writable(self.root, self.path)
        # Autocommit mode: every write goes through `transaction()`, which issues BEGIN/COMMIT itself.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self._depth = 0
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            migrate(self.db)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise _database_error(self.path, exc) from None

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

    def put_document(
        self, uri: str, title: str, text: str, chunks: list[tuple[str, int]], collection: str = DEFAULT_COLLECTION
    ) -> tuple[Document, str]:
        """Store `text` as the newest version of `uri` in `collection`; returns the stored document and what happened:
        "added" (new uri), "updated" (content changed: a new version), "unchanged" (nothing written) or
        "restored" (it had been removed; same content reactivates it, new content becomes a new version).
        """
        if not text.strip():
            raise ImprintError(f"{uri}: no text to store")
        if not chunks:
            raise ImprintError(f"{uri}: a document needs at least one chunk")
        safe_name(collection, "collection")
        doc_id = doc_id_for(uri, collection)
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
                "INSERT INTO documents (doc_id, version, uri, sha256, title, text, status, added_at, collection) "
                "VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)",
                (doc_id, version, uri, sha, title, text, _now(), collection),
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

    def documents(self, include_deleted: bool = False, collection: str | None = None) -> list[Document]:
        """The newest version of each document (of one collection, or of all when `collection` is None), by uri."""
        latest, params = _latest_sql(collection)
        where = "" if include_deleted else "WHERE status = 'active'"
        rows = self.db.execute(f"SELECT * FROM ({latest}) {where} ORDER BY uri, doc_id", params)
        return [_record(Document, r) for r in rows]

    def collections(self) -> dict[str, int]:
        """Every collection that holds or held documents, with its number of active documents, by name."""
        rows = self.db.execute(
            "SELECT collection, SUM(status = 'active') FROM latest_documents GROUP BY collection ORDER BY collection"
        )
        return {name: int(n) for name, n in rows}

    def has_collection(self, collection: str) -> bool:
        """Whether `collection` has active documents (an index lookup, cheap with thousands of collections)."""
        latest, params = _latest_sql(collection)
        return (
            self.db.execute(f"SELECT 1 FROM ({latest}) WHERE status = 'active' LIMIT 1", params).fetchone() is not None
        )

    def get_document(self, doc_id_or_uri: str, version: int | None = None, collection: str | None = None) -> Document:
        """A document by id, uri or file path (newest version unless `version`), removed ones included."""
        doc_id = self._resolve(doc_id_or_uri, collection)
        if version is None:
            found = self._latest(doc_id)
        else:
            row = self.db.execute("SELECT * FROM documents WHERE doc_id = ? AND version = ?", (doc_id, version))
            found = next((_record(Document, r) for r in row), None)
        if found is None:
            raise NotFoundError(f"document {doc_id_or_uri} has no version {version}")
        return found

    def history(self, doc_id_or_uri: str, collection: str | None = None) -> list[Document]:
        """Every stored version of a document, oldest first."""
        doc_id = self._resolve(doc_id_or_uri, collection)
        rows = self.db.execute("SELECT * FROM documents WHERE doc_id = ? ORDER BY version", (doc_id,))
        return [_record(Document, r) for r in rows]

    def chunks(self, doc_ids: Iterable[str] | None = None, collection: str | None = None) -> list[Chunk]:
        """Chunks of the newest version of active documents (optionally only `doc_ids`, only `collection`), by
        document then order."""
        latest, params = _latest_sql(collection)
        sql = (
            f"SELECT c.* FROM chunks c JOIN ({latest}) d ON c.doc_id = d.doc_id AND c.version = d.version "
            "WHERE d.status = 'active'"
        )
        if doc_ids is not None:
            ids = list(doc_ids)
            if not ids:
                return []
            params += ids
            sql += f" AND c.doc_id IN ({', '.join('?' * len(ids))})"
        rows = self.db.execute(sql + " ORDER BY d.uri, c.doc_id, c.ord", params)
        return [_record(Chunk, r) for r in rows]

    def version_chunks(self, doc_id: str, version: int) -> list[Chunk]:
        """Chunks of one stored version, current or historical."""
        rows = self.db.execute(
            "SELECT * FROM chunks WHERE doc_id = ? AND version = ? ORDER BY ord", (self._resolve(doc_id), version)
        )
        return [_record(Chunk, r) for r in rows]

    def remove_document(self, doc_id_or_uri: str, collection: str | None = None) -> Document:
        """Tombstone a document: it leaves the corpus but its history stays. Removing twice is a no-op."""
        doc_id = self._resolve(doc_id_or_uri, collection)
        with self.transaction():
            latest = self._latest(doc_id)
            if latest.status == "active":
                self.db.execute(
                    "UPDATE documents SET status = 'deleted' WHERE doc_id = ? AND version = ?", (doc_id, latest.version)
                )
            return self._latest(doc_id)

    def corpus_version(self, collection: str | None = None) -> str:
        """Short hash of the active corpus (of one collection, or of the whole workspace when None): changes exactly
        when a document is added, changed or removed there. A workspace with only the default collection has the
        same version either way."""
        latest, params = _latest_sql(collection)
        rows = self.db.execute(
            f"SELECT doc_id, version, sha256 FROM ({latest}) WHERE status = 'active' ORDER BY doc_id", params
        )
        digest = hashlib.sha256("".join(f"{r[0]}:{r[1]}:{r[2]}\n" for r in rows).encode())
        return digest.hexdigest()[:12]

    def _latest(self, doc_id: str) -> Document | None:
        # the primary key's order, not the view: the view groups every document first
        row = self.db.execute(
            "SELECT * FROM documents WHERE doc_id = ? ORDER BY version DESC LIMIT 1", (doc_id,)
        ).fetchone()
        return _record(Document, row) if row else None

    def _resolve(self, key: str, collection: str | None = None) -> str:
        """doc_id of a document named by id, exact uri, or a path that resolves to its uri; with `collection`, only a
        document of that collection (a uri or path is looked up there; None: in the default collection)."""
        where = collection or DEFAULT_COLLECTION
        candidates = [key, doc_id_for(key, where)]
        try:
            candidates.append(doc_id_for(str(Path(key).expanduser().resolve()), where))
        except (OSError, RuntimeError):
            pass
        for doc_id in candidates:
            row = self.db.execute("SELECT collection FROM documents WHERE doc_id = ? LIMIT 1", (doc_id,)).fetchone()
            if row and (collection is None or row[0] == collection):
                return doc_id
        scope = f"collection {collection!r} of {self.root}" if collection else str(self.root)
        raise NotFoundError(f"no document {key!r} in {scope}: `imprint docs --collection NAME` lists them")

    # ---- datasets and modules -------------------------------------------------------------------------------

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / safe_name(name, "dataset")

    def module_dir(self, name: str, version: int) -> Path:
        return self.root / "modules" / safe_name(name, "module") / str(int(version))

    def register_dataset(
        self,
        name: str,
        path: str,
        n_records: int,
        corpus_version: str,
        manifest: dict,
        collection: str = DEFAULT_COLLECTION,
    ) -> DatasetEntry:
        """Record a synthetic dataset made from `collection`; registering a name again replaces it (its files were
        rewritten)."""
        safe_name(name, "dataset")
        safe_name(collection, "collection")
        with self.transaction():
            self.check_name("dataset", name, collection)
            self.db.execute(
                "INSERT OR REPLACE INTO datasets (name, path, n_records, corpus_version, manifest_json, created_at, "
                "collection) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    str(path),
                    int(n_records),
                    corpus_version,
                    json.dumps(manifest, ensure_ascii=False),
                    _now(),
                    collection,
                ),
            )
        return self.get_dataset(name)

    def check_name(self, kind: Literal["module", "dataset"], name: str, collection: str) -> None:
        """A module or dataset name belongs to one collection in the whole workspace (a bare module name resolves
        to one current version, and a dataset name is one folder): reusing another collection's name would make
        its tenant's module or data someone else's. Callers check before they store anything; registering checks
        again."""
        table = {"module": "modules", "dataset": "datasets"}[kind]
        rows = self.db.execute(f"SELECT DISTINCT collection FROM {table} WHERE name = ? ORDER BY 1", (name,))
        owners = [r[0] for r in rows if r[0] != collection]
        if owners:
            raise ImprintError(
                f"{kind} name {name!r} belongs to collection {owners[0]!r}; names are unique across collections: "
                f"pick another --name for collection {collection!r}"
            )

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
        collection: str = DEFAULT_COLLECTION,
        parent_version: int | None = None,
    ) -> ModuleEntry:
        """Record a trained module version (trained on `collection`, its weights started from `parent_version` or
        the base model) and make it the current one; versions are immutable, so registering one twice is an error."""
        safe_name(name, "module")
        safe_name(collection, "collection")
        with self.transaction():
            self.check_name("module", name, collection)
            try:
                self.db.execute(
                    "INSERT INTO modules (name, version, method, base_model, path, corpus_version, manifest_json, "
                    "created_at, collection, parent_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        int(version),
                        method,
                        base_model,
                        str(path),
                        corpus_version,
                        json.dumps(manifest, ensure_ascii=False),
                        _now(),
                        collection,
                        parent_version,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ImprintError(f"module {name}@{version} already exists; train under a new version") from None
            self._set_current(name, version)
        return self.get_module(name, version)

    def set_current_module(self, name: str, version: int) -> ModuleEntry:
        """Make `name@version` the version a bare `name` resolves to (`imprint rollback`); it must exist."""
        with self.transaction():
            entry = self.get_module(name, version)
            self._set_current(name, entry.version)
        return entry

    def _set_current(self, name: str, version: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO module_current (name, version, set_at) VALUES (?, ?, ?)", (name, version, _now())
        )

    def current_versions(self) -> dict[str, int]:
        """The current version of every module name: the one `imprint rollback` chose, else the newest."""
        rows = self.db.execute(
            "SELECT m.name, COALESCE(c.version, MAX(m.version)) FROM modules m "
            "LEFT JOIN module_current c ON c.name = m.name GROUP BY m.name"
        )
        return {name: int(version) for name, version in rows}

    def modules(self) -> list[ModuleEntry]:
        """All module versions, by name then version."""
        return [_record(ModuleEntry, r) for r in self.db.execute("SELECT * FROM modules ORDER BY name, version")]

    def module(self, spec: str) -> ModuleEntry:
        """The one module resolver: `name` (its current version: `imprint rollback` sets it, else the newest) or
        `name@version` (read by `imprint.refs`), with its manifest."""
        try:
            ref = refs.parse(spec)
        except refs.BadModuleRef as exc:
            raise NotFoundError(str(exc)) from None
        return self.get_module(ref.name, ref.version)

    def get_module(self, name: str, version: int | None = None) -> ModuleEntry:
        """A module version; the current one when `version` is None (see `current_versions`)."""
        if version is not None and not 1 <= version <= MAX_VERSION:
            raise NotFoundError(f"no module {name}@{version}: versions are whole numbers from 1 to {MAX_VERSION:,}")
        if version is None:
            row = self.db.execute(
                "SELECT m.* FROM modules m LEFT JOIN module_current c ON c.name = m.name "
                "WHERE m.name = ? ORDER BY (m.version = c.version) DESC, m.version DESC LIMIT 1",
                (name,),
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


def _latest_sql(collection: str | None) -> tuple[str, list[str]]:
    """SQL (and its parameters) of the newest version of each document, of one collection or of all. The
    one-collection form goes through the (collection, doc_id) index, so its cost does not grow with the number of
    other collections."""
    if collection is None:
        return "SELECT * FROM latest_documents", []
    return (
        "SELECT d.* FROM documents d WHERE d.collection = ? "
        "AND d.version = (SELECT MAX(m.version) FROM documents m WHERE m.doc_id = d.doc_id)",
        [collection],
    )


def _check_writable(root: Path, path: Path) -> None:
    """Refuse a read-only workspace up front: every command records something in it (SQLite's WAL, the index).
    Permission bits are read as well as access(): root may write anywhere, but `chmod -R a-w` says not to."""
    for target in (root, path):
        if target.exists() and (not os.access(target, os.W_OK) or not target.stat().st_mode & 0o222):
            raise WorkspaceError(
                f"workspace {root} is read-only ({target.name} is not writable): make it writable "
                f"(chmod -R u+w {root}) or pick another --workspace"
            )


def _database_error(path: Path, exc: sqlite3.DatabaseError) -> WorkspaceError:
    """SQLite's errors on opening, as one line a user can act on; the file itself is left untouched."""
    text = str(exc)
    if "readonly" in text:
        return WorkspaceError(f"workspace database {path} is read-only: make it writable or pick another --workspace")
    if "not a database" in text or "malformed" in text:
        return WorkspaceError(
            f"{path} is not an imprint database ({text}): move it aside to start a new workspace there, "
            "or pick another --workspace"
        )
    return WorkspaceError(f"cannot open the workspace database {path}: {text}")


def safe_name(name: str, kind: str) -> str:
    """Names become directory names, so they may not climb out of the workspace or hide."""
    if not refs.valid_name(name):
        raise ImprintError(f"bad {kind} name {name!r}: use letters, digits, '.', '_' or '-' (not starting with '.')")
    return name
