"""Vector stores behind one small Protocol: an embedded sqlite-vec file (default) or Qdrant (server or embedded).

Why sqlite-vec by default: the index is one SQLite file next to the workspace database, needs ~1 MB of
dependencies and no server, and deletes/inserts happen in one transaction, so an interrupted sync never leaves
stale or duplicate chunks. Its search is exact (a brute-force scan), which is fast up to about a million chunks;
past that, use Qdrant (`--set retrieval.store=qdrant retrieval.url=http://host:6333`), which builds an HNSW index.
sqlite-vec is loaded through apsw because many Python builds compile the stdlib sqlite3 without extension loading.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Protocol

import numpy as np

from imprint.errors import ImprintError


class VectorStore(Protocol):
    def ids(self) -> set[str]: ...

    def replace(self, remove: set[str], add_ids: list[str], add_vectors: np.ndarray) -> None: ...

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]: ...

    def close(self) -> None: ...


class SqliteVecStore:
    """Vectors in `<workspace>/index/vectors.sqlite`, in a vec0 virtual table keyed by chunk id.

    `block` sets how many vectors sqlite-vec allocates at a time (its `chunk_size`, 1,024 when None: 1.5 MB for
    even one vector). Collections' indexes use 64, so a one-document collection takes ~100 kB, not 1.6 MB; a
    search over 20,000 vectors took 42 ms against 39 ms with 1,024 (2026-11-30, this machine)."""

    def __init__(self, path: Path, dim: int, model: str, block: int | None = None):
        import apsw
        import sqlite_vec

        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = apsw.Connection(str(path))
        self.db.enable_load_extension(True)
        self.db.load_extension(sqlite_vec.loadable_path())
        self.db.enable_load_extension(False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        stored = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if stored and (stored.get("model") != model or stored.get("dim") != str(dim)):
            with self.db:  # another embedding model: vectors are not comparable, start over
                self.db.execute("DROP TABLE IF EXISTS vectors")
                self.db.execute("DELETE FROM meta")
        with self.db:
            self.db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS vectors USING "
                f"vec0(chunk_id TEXT PRIMARY KEY, embedding float[{int(dim)}] distance_metric=cosine"
                f"{f', chunk_size={int(block)}' if block else ''})"
            )
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?), ('dim', ?)", (model, str(dim)))

    def ids(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT chunk_id FROM vectors")}

    def replace(self, remove: set[str], add_ids: list[str], add_vectors: np.ndarray) -> None:
        with self.db:  # one transaction: a crash leaves the old index intact
            self.db.executemany("DELETE FROM vectors WHERE chunk_id = ?", [(i,) for i in sorted(remove)])
            self.db.executemany(
                "INSERT INTO vectors (chunk_id, embedding) VALUES (?, ?)",
                [
                    (i, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                    for i, v in zip(add_ids, add_vectors, strict=True)
                ],
            )

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        rows = self.db.execute(
            "SELECT chunk_id, distance FROM vectors WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (np.ascontiguousarray(vector, dtype=np.float32).tobytes(), int(k)),
        ).fetchall()
        return [(chunk_id, 1.0 - float(distance)) for chunk_id, distance in rows]

    def close(self) -> None:
        self.db.close()


class QdrantStore:
    """Vectors in a Qdrant collection: a server at `url`, or Qdrant's embedded mode under index/qdrant."""

    def __init__(self, url: str, path: Path, collection: str, dim: int):
        try:
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise ImprintError("retrieval.store=qdrant needs qdrant-client: pip install 'imprint[store]'") from None
        self.models = models
        self.client = QdrantClient(url=url) if url else QdrantClient(path=str(path))
        self.collection = collection
        if not self.client.collection_exists(collection):
            self.client.create_collection(
                collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )

    @staticmethod
    def _point_id(chunk_id: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"imprint:{chunk_id}"))

    def ids(self) -> set[str]:
        found, offset = set(), None
        while True:
            points, offset = self.client.scroll(self.collection, limit=1024, offset=offset, with_payload=True)
            found.update(p.payload["chunk_id"] for p in points)
            if offset is None:
                return found

    def replace(self, remove: set[str], add_ids: list[str], add_vectors: np.ndarray) -> None:
        if remove:
            self.client.delete(
                self.collection, points_selector=self.models.PointIdsList(points=[self._point_id(i) for i in remove])
            )
        if add_ids:
            self.client.upsert(
                self.collection,
                points=[
                    self.models.PointStruct(id=self._point_id(i), vector=v.tolist(), payload={"chunk_id": i})
                    for i, v in zip(add_ids, add_vectors, strict=True)
                ],
            )

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        points = self.client.query_points(self.collection, query=vector.tolist(), limit=k, with_payload=True).points
        return [(p.payload["chunk_id"], float(p.score)) for p in points]

    def close(self) -> None:
        self.client.close()
