"""The hybrid retrieval index: BM25 (bm25s) and MiniLM vectors, fused by reciprocal rank.

`Retriever.open(ws)` brings the index in step with the workspace's current chunks: vectors of chunks that are
no longer current (a changed document's old version, a removed document) are deleted and new chunks embedded, in
one store transaction; unchanged chunks are not re-embedded. BM25 is rebuilt per corpus version (seconds even
for large corpora) and cached under index/bm25/<corpus_version>.

Each collection has its own index, built from its documents only: the default collection's under `index/`, any
other's under `index/collections/<name>/`. A search can therefore never return another collection's chunk, and
adding a small collection costs the same however many others there are. `MergedRetriever` searches several.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imprint.ingest.chunking import split_sentences
from imprint.progress import Bar
from imprint.retrieval import embed as embedding
from imprint.retrieval.config import RetrievalConfig
from imprint.retrieval.stores import QdrantStore, SqliteVecStore, VectorStore


@dataclass(frozen=True)
class Hit:
    doc_id: str
    title: str
    chunk_id: str
    text: str
    score: float  # reciprocal-rank-fusion score
    dense: float  # cosine similarity of query and chunk (0 when the dense side did not return it)
    bm25: float  # BM25 score (0 when the lexical side did not return it)


def _bm25_tokens(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False)


class Retriever:
    def __init__(self, root: Path, chunks: dict, titles: dict[str, str], store: VectorStore, bm25, order, config):
        self.root, self.chunks, self.titles = root, chunks, titles
        self.store, self.bm25, self.order, self.config = store, bm25, order, config

    @classmethod
    def open(cls, ws, config: RetrievalConfig | None = None, collection: str = "default") -> Retriever:
        """The index of `collection`, synced to its current documents."""
        config = config or RetrievalConfig()
        root = index_dir(ws.root, collection)
        chunks = {c.id: c for c in ws.chunks(collection=collection)}
        titles = {d.id: d.title for d in ws.documents(collection=collection)}
        if config.store == "qdrant":
            name = config.collection if collection == "default" else f"{config.collection}--{collection}"
            store = QdrantStore(config.url, root / "qdrant", name, embedding.dimension())
        else:
            block = None if collection == "default" else 64  # many small collections: small allocation blocks
            store = SqliteVecStore(root / "vectors.sqlite", embedding.dimension(), embedding.EMBEDDING_MODEL, block)
        sync(store, chunks, titles)
        bm25, order = _bm25_index(root / "bm25", ws.corpus_version(collection), chunks, titles)
        return cls(root, chunks, titles, store, bm25, order, config)

    def __len__(self) -> int:
        return len(self.chunks)

    def close(self) -> None:
        self.store.close()

    def search(self, query: str, k: int | None = None) -> list[Hit]:
        """Top-k chunks for `query`, BM25 and dense ranks fused by RRF (Cormack et al. 2009)."""
        k = k or self.config.k
        if not self.chunks or not query.strip():
            return []
        n = min(self.config.candidates, len(self.chunks))
        dense = self.store.search(embedding.embed([query])[0], n)
        lexical: list[tuple[str, float]] = []
        tokens = _bm25_tokens([query])
        if tokens.ids[0]:  # a query of stopwords only has no lexical side
            ids, scores = self.bm25.retrieve(tokens, k=n, show_progress=False, n_threads=1)
            lexical = [(self.order[i], float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
        fused: dict[str, float] = {}
        for ranking in (dense, lexical):
            for rank, (chunk_id, _) in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (self.config.rrf_k + rank + 1)
        dense_score, bm25_score = dict(dense), dict(lexical)
        best = sorted(fused, key=lambda c: (-fused[c], c))[:k]
        return [
            Hit(
                doc_id=self.chunks[c].doc_id,
                title=self.titles.get(self.chunks[c].doc_id, ""),
                chunk_id=c,
                text=self.chunks[c].text,
                score=round(fused[c], 6),
                dense=round(dense_score.get(c, 0.0), 4),
                bm25=round(bm25_score.get(c, 0.0), 4),
            )
            for c in best
            if c in self.chunks
        ]


def index_dir(root: Path, collection: str) -> Path:
    """Where a collection's index lives in workspace `root` (the default collection keeps the original place)."""
    from imprint.workspace import DEFAULT_COLLECTION, safe_name

    if collection == DEFAULT_COLLECTION:
        return root / "index"
    return root / "index" / "collections" / safe_name(collection, "collection")


class MergedRetriever:
    """Several collections' retrievers searched as one: each returns its top k, the best k by fused score win
    (reciprocal-rank scores are comparable across indexes: they depend on ranks only)."""

    def __init__(self, retrievers: list[Retriever]):
        self.retrievers = retrievers

    def __len__(self) -> int:
        return sum(len(r) for r in self.retrievers)

    def search(self, query: str, k: int | None = None) -> list[Hit]:
        hits = [h for r in self.retrievers for h in r.search(query, k)]
        k = k or (self.retrievers[0].config.k if self.retrievers else 4)
        return sorted(hits, key=lambda h: (-h.score, h.chunk_id))[:k]


def sync(store: VectorStore, chunks: dict, titles: dict[str, str]) -> tuple[int, int]:
    """Make the store hold exactly the current chunks; returns (added, removed)."""
    have = store.ids()
    remove = have - chunks.keys()
    new = [c for c in chunks.values() if c.id not in have]
    vectors = np.zeros((0, 1), dtype=np.float32)
    if new:
        texts = [_passage(titles.get(c.doc_id, ""), c.text) for c in new]
        parts = []
        with Bar("index", unit="chunks") as bar:
            for start in range(0, len(texts), 256):
                parts.append(embedding.embed(texts[start : start + 256]))
                bar.update(min(start + 256, len(texts)), len(texts))
        vectors = np.concatenate(parts)
    if remove or new:
        store.replace(remove, [c.id for c in new], vectors)
    return len(new), len(remove)


def _passage(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


def _bm25_index(directory: Path, corpus_version: str, chunks: dict, titles: dict[str, str]):
    import bm25s

    path = directory / corpus_version
    order = sorted(chunks)
    if (path / "order.json").is_file() and json.loads((path / "order.json").read_text()) == order:
        return bm25s.BM25.load(str(path), show_progress=False), order
    index = bm25s.BM25()
    if order:
        index.index(
            _bm25_tokens([_passage(titles.get(chunks[c].doc_id, ""), chunks[c].text) for c in order]),
            show_progress=False,
        )
    if directory.is_dir():  # older corpus versions' indexes are stale
        for old in directory.iterdir():
            if old.name != corpus_version:
                shutil.rmtree(old, ignore_errors=True)
    if order:
        tmp = directory / f".{corpus_version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        index.save(str(tmp), show_progress=False)
        (tmp / "order.json").write_text(json.dumps(order))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return index, order


def _sentences(hit: Hit) -> list[str]:
    return [s.strip() for s in split_sentences(hit.text) if re.search(r"\w", s)] or [hit.text]


def sentence_similarities(requests: list[tuple[list[str], list[Hit]]]) -> list[list[list[tuple[str, list[float]]]]]:
    """For each request (queries, hits): each hit's sentences, each with its cosine to every query. All queries and
    distinct sentences are embedded in one call (hits of different questions overlap: each sentence is embedded
    once)."""
    groups = [[_sentences(h) for h in hits] for _, hits in requests]
    row: dict[str, int] = {}
    for (queries, _), sentences in zip(requests, groups, strict=True):
        for text in [*queries, *(s for group in sentences for s in group)]:
            row.setdefault(text, len(row))
    vectors = embedding.embed(list(row))
    out = []
    for (queries, _), sentences in zip(requests, groups, strict=True):
        q = vectors[[row[query] for query in queries]]
        out.append([[(s, [float(c) for c in q @ vectors[row[s]]]) for s in group] for group in sentences])
    return out


def quote_sentences(requests: list[tuple[list[str], list[Hit]]]) -> list[list[list[tuple[str, float]]]]:
    """For each request (queries, hits) and each of its queries: every hit's sentence closest in meaning to the
    query, with that cosine."""
    scored = sentence_similarities(requests)
    return [
        [[max(((s, cos[i]) for s, cos in group), key=lambda x: x[1]) for group in hits] for i in range(len(queries))]
        for (queries, _), hits in zip(requests, scored, strict=True)
    ]


def best_sentences(query: str, hits: list[Hit]) -> list[tuple[str, float]]:
    """For each hit, its sentence closest in meaning to `query` and that cosine: the quote shown as evidence."""
    return quote_sentences([([query], hits)])[0][0] if hits else []
