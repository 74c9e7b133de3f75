"""The workspace: SQLite records of documents, chunks, datasets and modules, plus their files on disk."""

from imprint.workspace.db import (
    DEFAULT_COLLECTION,
    Chunk,
    DatasetEntry,
    Document,
    ModuleEntry,
    Workspace,
    chunk_id_for,
    default_root,
    doc_id_for,
    safe_name,
    trained_documents,
)

__all__ = [
    "DEFAULT_COLLECTION",
    "Chunk",
    "DatasetEntry",
    "Document",
    "ModuleEntry",
    "Workspace",
    "chunk_id_for",
    "default_root",
    "doc_id_for",
    "safe_name",
    "trained_documents",
]
