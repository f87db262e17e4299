"""One embedding model per process: ETS, auto's memory and the corpora share it, and start-up loads it."""

import asyncio

import numpy as np

from service.api.app import warm_embeddings
from service.runtime.embeddings import DEFAULT_EMBEDDING_MODEL, embedder
from service.store.corpora import CorpusStore
from strategies.semantic import embed


def test_one_embedder_per_model_for_every_user() -> None:
    shared = embedder(DEFAULT_EMBEDDING_MODEL)
    assert embedder() is shared
    assert CorpusStore.embedder(DEFAULT_EMBEDDING_MODEL) is shared


def test_start_up_loads_the_model_and_it_gives_unit_vectors() -> None:
    asyncio.run(warm_embeddings())
    assert embedder().loaded
    vectors = embed(["2 + 2 = 4", "The lighthouse keeper fed the dragon."])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert float(vectors[0] @ vectors[1]) < 0.5
