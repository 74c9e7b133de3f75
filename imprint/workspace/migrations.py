"""Append-only, named schema migrations for the workspace database (the simonw/llm pattern).

Why: a workspace outlives the code that created it. Each change to the schema is a new function
`mNNN_what(db)` appended to `MIGRATIONS`; `migrate` applies the ones a database has not seen yet, in order,
each inside its own transaction, and records its name in `_migrations`. Never edit or reorder a migration
that has shipped: write a new one instead. Statements run one by one through `db.execute` (not
`executescript`, which would commit behind our back and break the all-or-nothing guarantee).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from imprint.errors import ImprintError

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration; its function name is its permanent identity."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    """Documents with full version history, their chunks, and the dataset and module registries."""
    db.execute(
        """
        CREATE TABLE documents (
            doc_id TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            uri TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            title TEXT NOT NULL,
            text TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'deleted')),
            added_at TEXT NOT NULL,
            PRIMARY KEY (doc_id, version)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE chunks (
            chunk_id TEXT PRIMARY KEY,
            doc_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            ord INTEGER NOT NULL CHECK (ord >= 0),
            text TEXT NOT NULL,
            n_tokens INTEGER NOT NULL CHECK (n_tokens >= 0),
            UNIQUE (doc_id, version, ord),
            FOREIGN KEY (doc_id, version) REFERENCES documents (doc_id, version)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE datasets (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            n_records INTEGER NOT NULL,
            corpus_version TEXT NOT NULL,
            manifest_json TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE modules (
            name TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            method TEXT NOT NULL,
            base_model TEXT NOT NULL,
            path TEXT NOT NULL,
            corpus_version TEXT NOT NULL,
            manifest_json TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (name, version)
        )
        """
    )


@migration
def m002_latest_documents_view(db: sqlite3.Connection) -> None:
    """The newest version of each document: what the corpus is made of, deleted or not."""
    db.execute(
        """
        CREATE VIEW latest_documents AS
        SELECT d.* FROM documents d
        JOIN (SELECT doc_id, MAX(version) AS version FROM documents GROUP BY doc_id) newest
          ON d.doc_id = newest.doc_id AND d.version = newest.version
        """
    )
    db.execute("CREATE INDEX documents_uri ON documents (uri)")


@migration
def m003_collections(db: sqlite3.Connection) -> None:
    """Named collections: every document, dataset and module belongs to one (existing rows to `default`).

    A collection is the unit a tenant owns: its documents, its retrieval index and the modules trained on it.
    """
    for table in ("documents", "datasets", "modules"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN collection TEXT NOT NULL DEFAULT 'default'")
    db.execute("CREATE INDEX documents_collection ON documents (collection, doc_id)")


@migration
def m004_module_lineage(db: sqlite3.Connection) -> None:
    """Module lineage and the current version: each version names the version its weights started from (NULL: the
    base model), and `module_current` names the version a bare `name` resolves to (no row: the newest one).

    `imprint rollback name@N` moves the pointer; versions themselves stay immutable.
    """
    db.execute("ALTER TABLE modules ADD COLUMN parent_version INTEGER")
    db.execute(
        """
        CREATE TABLE module_current (
            name TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            set_at TEXT NOT NULL,
            FOREIGN KEY (name, version) REFERENCES modules (name, version)
        )
        """
    )


def applied(db: sqlite3.Connection) -> list[str]:
    """Names of the migrations this database has already run, in the order they ran."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    return [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY rowid")]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the pending migrations in order; returns the names applied now (empty when up to date).

    `db` must be in autocommit mode (`isolation_level=None`) so each migration is exactly one explicit
    transaction: a failing migration leaves no half-built table and is retried on the next open.
    """
    done = set(applied(db))
    unknown = done - {fn.__name__ for fn in MIGRATIONS}
    if unknown:
        raise ImprintError(
            f"this workspace was written by a newer imprint (unknown migrations: {', '.join(sorted(unknown))}); "
            "upgrade imprint to open it"
        )
    ran = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while we waited for the write lock.
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (fn.__name__,)).fetchone():
                db.execute("ROLLBACK")
                continue
            fn(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (fn.__name__, datetime.now(UTC).isoformat(timespec="seconds")),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        ran.append(fn.__name__)
    return ran
