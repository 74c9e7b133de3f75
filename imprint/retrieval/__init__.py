"""Hybrid retrieval over the workspace corpus: BM25 + MiniLM embeddings, fused by reciprocal rank."""

from imprint.retrieval.config import RetrievalConfig
from imprint.retrieval.index import Hit, Retriever, best_sentences, quote_sentences

__all__ = ["Hit", "RetrievalConfig", "Retriever", "best_sentences", "quote_sentences"]
