"""Settings of the retrieval index (`--set retrieval.key=value`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrievalConfig:
    store: str = field(
        default="sqlite-vec",
        metadata={"help": "vector store: sqlite-vec (embedded file under <workspace>/index) or qdrant"},
    )
    url: str = field(
        default="",
        metadata={"help": "qdrant: server URL (http://host:6333), or empty for an embedded store under index/"},
    )
    collection: str = field(default="imprint", metadata={"help": "qdrant collection name"})
    k: int = field(default=4, metadata={"help": "chunks returned per question"})
    candidates: int = field(default=30, metadata={"help": "hits taken from each of BM25 and dense before fusion"})
    rrf_k: int = field(default=60, metadata={"help": "reciprocal-rank-fusion constant (Cormack et al. 2009)"})

    def __post_init__(self):
        if self.store not in ("sqlite-vec", "qdrant"):
            raise ValueError(f"retrieval.store must be sqlite-vec or qdrant, not {self.store!r}")
        if self.k < 1 or self.candidates < self.k:
            raise ValueError("retrieval.k must be >= 1 and retrieval.candidates >= retrieval.k")
        if self.rrf_k < 1:
            raise ValueError("retrieval.rrf_k must be >= 1")
