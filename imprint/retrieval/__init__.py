"""Hybrid retrieval over the workspace corpus: BM25 + MiniLM embeddings, fused by reciprocal rank."""

from imprint.retrieval.config import RetrievalConfig
from imprint.retrieval.index import (
    Hit,
    MergedRetriever,
    Retriever,
    best_sentences,
    quote_sentences,
    sentence_similarities,
)

__all__ = ["Hit", "MergedRetriever", "RetrievalConfig", "Retriever", "best_sentences", "quote_sentences",
           "sentence_similarities"]  # fmt: skip
